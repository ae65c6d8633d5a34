namespace PerCpu.AspNetCore;

/// <summary>
/// Aggregation temporality of exported counters and histograms, for every family (the request durations, the app's
/// families, the Meter API instruments); up-down counters and gauges are always totals.
/// </summary>
public enum OtlpTemporality
{
    /// <summary>Totals since the start of the process. A failed export loses nothing: the next one carries the totals.</summary>
    Cumulative = 0,

    /// <summary>
    /// Changes since the last successful export: histograms from collect-and-reset reads, counters as their total minus
    /// the total last delivered. Deltas that could not be sent are merged into the next export, never dropped (bounded:
    /// one pending delta per series); a series with no change since sends no point.
    /// </summary>
    Delta = 1,
}

/// <summary>The OTLP transport.</summary>
public enum OtlpProtocol
{
    /// <summary>OTLP/HTTP with a protobuf body (<c>http/protobuf</c>), POSTed to the metrics URL.</summary>
    HttpProtobuf = 0,

    /// <summary>
    /// OTLP/gRPC (<c>grpc</c>, the OpenTelemetry SDK's default): the unary <c>MetricsService/Export</c> call over HTTP/2
    /// (cleartext HTTP/2 for an <c>http://</c> endpoint, as the SDK does), with the same retries, deadline and shutdown as
    /// HTTP: gRPC's retryable codes are retried, a <c>RetryInfo</c> in the status details plays <c>Retry-After</c>'s part,
    /// the remaining deadline goes out as <c>grpc-timeout</c>, and <c>RESOURCE_EXHAUSTED</c> without <c>RetryInfo</c> (a
    /// message over the server's size limit) splits the batch as a 413 does.
    /// </summary>
    Grpc = 1,
}

/// <summary>
/// Options of PerCpu's own OTLP metrics exporter (<c>services.AddPerCpuOtlpExporter(o => ...)</c>). Defaults come
/// from the standard <c>OTEL_*</c> environment variables; values set here override them. Validated at startup.
/// </summary>
public sealed class PerCpuOtlpExporterOptions
{
    /// <summary>
    /// The transport. Default: <c>OTEL_EXPORTER_OTLP_METRICS_PROTOCOL</c>, else <c>OTEL_EXPORTER_OTLP_PROTOCOL</c>
    /// (<c>grpc</c> or <c>http/protobuf</c>; any other value fails startup), else <see cref="OtlpProtocol.HttpProtobuf"/>.
    /// </summary>
    public OtlpProtocol Protocol { get; set; }

    /// <summary>
    /// The full metrics URL for HTTP; for gRPC, the server (scheme, host and port; the path is the service's). Default:
    /// <c>OTEL_EXPORTER_OTLP_METRICS_ENDPOINT</c>, else <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> (+ <c>/v1/metrics</c> for
    /// HTTP), else <c>http://localhost:4318/v1/metrics</c> for HTTP and <c>http://localhost:4317</c> for gRPC.
    /// </summary>
    public Uri? Endpoint
    {
        get;
        set
        {
            field = value;
            EndpointIsDefault = false;
        }
    }

    /// <summary>No endpoint was configured: the protocol's default port applies (4318 for HTTP, 4317 for gRPC).</summary>
    internal bool EndpointIsDefault { get; set; }

    /// <summary>An invalid protocol variable, said at startup by the validator.</summary>
    internal string? ProtocolProblem { get; set; }

    /// <summary>Extra request headers (authentication). Default: <c>OTEL_EXPORTER_OTLP_METRICS_HEADERS</c> / <c>OTEL_EXPORTER_OTLP_HEADERS</c>.</summary>
    public IDictionary<string, string> Headers { get; } = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);

    /// <summary>Default: <c>OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE</c> (<c>cumulative</c>; <c>delta</c> and <c>lowmemory</c> mean delta).</summary>
    public OtlpTemporality Temporality { get; set; }

    /// <summary>Time between exports. Default: <c>OTEL_METRIC_EXPORT_INTERVAL</c> milliseconds, else 60 s.</summary>
    public TimeSpan ExportInterval { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Time an export may take, retries included. Default: <c>OTEL_METRIC_EXPORT_TIMEOUT</c> milliseconds, else 30 s.</summary>
    public TimeSpan ExportTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Time the final export on shutdown may take, retries included. The final export also stops when the host's shutdown
    /// token fires (<c>HostOptions.ShutdownTimeout</c>, 30 s by default), and never takes longer than
    /// <see cref="ExportTimeout"/>. What it could not send is logged once, with its size, and dropped. Default 5 s.
    /// </summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Gzip the request body. Default: <c>OTEL_EXPORTER_OTLP_METRICS_COMPRESSION</c> / <c>OTEL_EXPORTER_OTLP_COMPRESSION</c> = <c>gzip</c>.</summary>
    public bool Gzip { get; set; }

    /// <summary>
    /// Send <c>http.server.request.duration</c> as an OTLP <c>ExponentialHistogram</c> (exact PerCpu buckets, scale and offset)
    /// instead of an explicit-bucket <c>Histogram</c> with the configured boundaries. Default false.
    /// </summary>
    public bool ExponentialHistogram { get; set; }

    /// <summary>The <c>service.name</c> resource attribute. Default: <c>OTEL_SERVICE_NAME</c>, else <c>service.name</c> in
    /// <c>OTEL_RESOURCE_ATTRIBUTES</c>, else <c>unknown_service:</c> + the process name.</summary>
    public string? ServiceName { get; set; }

    /// <summary>Resource attributes. Default: <c>OTEL_RESOURCE_ATTRIBUTES</c> (<c>key=value,key2=value2</c>).</summary>
    public IDictionary<string, string> ResourceAttributes { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>
    /// First retry delay after a 429/502/503/504 or a network error; doubles on each retry (up to 30 s), with ±20% jitter.
    /// A <c>Retry-After</c> from the collector lengthens the wait, never shortens it below this backoff; a wait that would
    /// end after the export's deadline ends the export instead (the data is kept for the next one). At least 10 ms.
    /// Default 1 s.
    /// </summary>
    public TimeSpan RetryInitialBackoff { get; set; } = TimeSpan.FromSeconds(1);
}
