using System.Globalization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;

namespace PerCpu.AspNetCore.Otlp;

/// <summary>
/// Defaults from the standard OpenTelemetry variables, read through <see cref="IConfiguration"/> (so environment
/// variables, appsettings and command lines all work) or, without one, the process environment. Runs before the
/// user's <c>configure</c> delegate, which therefore overrides it.
/// </summary>
internal sealed class OtlpOptionsSetup(IConfiguration? configuration = null) : IConfigureOptions<PerCpuOtlpExporterOptions>
{
    public void Configure(PerCpuOtlpExporterOptions options)
    {
        string protocolVariable = Get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") is { Length: > 0 } ? "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL" : "OTEL_EXPORTER_OTLP_PROTOCOL";
        string? protocol = Get(protocolVariable)?.Trim();
        switch (protocol?.ToUpperInvariant())
        {
            case null or "" or "HTTP/PROTOBUF":
                options.Protocol = OtlpProtocol.HttpProtobuf;
                break;
            case "GRPC":
                options.Protocol = OtlpProtocol.Grpc;
                break;
            default:
                options.ProtocolProblem = $"{protocolVariable} is '{protocol}'; PerCpu's OTLP exporter speaks 'grpc' and 'http/protobuf' (set one, or PerCpuOtlpExporterOptions.Protocol).";
                break;
        }

        bool grpc = options.Protocol == OtlpProtocol.Grpc;
        string? metricsEndpoint = Get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        string? endpoint = Get("OTEL_EXPORTER_OTLP_ENDPOINT");
        if (!string.IsNullOrWhiteSpace(metricsEndpoint) && Uri.TryCreate(metricsEndpoint, UriKind.Absolute, out Uri? m))
        {
            options.Endpoint = m;
        }
        else if (!string.IsNullOrWhiteSpace(endpoint) && Uri.TryCreate(grpc ? endpoint : endpoint.TrimEnd('/') + "/v1/metrics", UriKind.Absolute, out Uri? e))
        {
            options.Endpoint = e; // for HTTP the base endpoint gets the signal path appended, as the specification says
        }
        else
        {
            options.Endpoint = new Uri(grpc ? "http://localhost:4317" : "http://localhost:4318/v1/metrics");
            options.EndpointIsDefault = true; // a Protocol set in code still gets its own default port
        }

        foreach ((string key, string value) in Pairs(Get("OTEL_EXPORTER_OTLP_HEADERS")).Concat(Pairs(Get("OTEL_EXPORTER_OTLP_METRICS_HEADERS"))))
        {
            options.Headers[key] = value;
        }

        options.Temporality = Get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")?.Trim().ToUpperInvariant() switch
        {
            "DELTA" or "LOWMEMORY" => OtlpTemporality.Delta,
            _ => OtlpTemporality.Cumulative,
        };

        if (Milliseconds("OTEL_METRIC_EXPORT_INTERVAL") is TimeSpan interval)
        {
            options.ExportInterval = interval;
        }

        if (Milliseconds("OTEL_METRIC_EXPORT_TIMEOUT") is TimeSpan timeout)
        {
            options.ExportTimeout = timeout;
        }

        string? compression = Get("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION") ?? Get("OTEL_EXPORTER_OTLP_COMPRESSION");
        options.Gzip = string.Equals(compression?.Trim(), "gzip", StringComparison.OrdinalIgnoreCase);

        foreach ((string key, string value) in Pairs(Get("OTEL_RESOURCE_ATTRIBUTES")))
        {
            options.ResourceAttributes[key] = value;
        }

        options.ServiceName = Get("OTEL_SERVICE_NAME") is { Length: > 0 } name ? name
            : options.ResourceAttributes.TryGetValue("service.name", out string? fromResource) ? fromResource : null;
    }

    /// <summary><c>key=value,key2=value2</c> with percent-encoded values, as the OTLP exporter specification defines.</summary>
    internal static IEnumerable<(string Key, string Value)> Pairs(string? text)
    {
        foreach (string item in (text ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = item.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0)
            {
                yield return (Uri.UnescapeDataString(item[..eq].Trim()), Uri.UnescapeDataString(item[(eq + 1)..].Trim()));
            }
        }
    }

    private string? Get(string name) => configuration is null ? Environment.GetEnvironmentVariable(name) : configuration[name];

    private TimeSpan? Milliseconds(string name) =>
        int.TryParse(Get(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int ms) && ms > 0 ? TimeSpan.FromMilliseconds(ms) : null;
}

/// <summary>Fails startup with a message that names the option and the fix.</summary>
internal sealed class OtlpOptionsValidator : IValidateOptions<PerCpuOtlpExporterOptions>
{
    /// <summary>The shortest first retry delay: a floor under every retry, whatever the collector's <c>Retry-After</c> says.</summary>
    public static readonly TimeSpan MinBackoff = TimeSpan.FromMilliseconds(10);

    /// <summary>The longest interval or timeout: timers and <c>Task.Delay</c> take up to about 49.7 days.</summary>
    public static readonly TimeSpan MaxPeriod = TimeSpan.FromDays(7);

    public ValidateOptionsResult Validate(string? name, PerCpuOtlpExporterOptions options)
    {
        var failures = new List<string>();
        if (options.ProtocolProblem is { } protocolProblem)
        {
            failures.Add(protocolProblem);
        }
        else if (!Enum.IsDefined(options.Protocol))
        {
            failures.Add($"PerCpuOtlpExporterOptions.Protocol is {(int)options.Protocol}; use OtlpProtocol.HttpProtobuf or OtlpProtocol.Grpc.");
        }

        if (options.Endpoint is not { IsAbsoluteUri: true } endpoint || (endpoint.Scheme != Uri.UriSchemeHttp && endpoint.Scheme != Uri.UriSchemeHttps))
        {
            failures.Add($"PerCpuOtlpExporterOptions.Endpoint '{options.Endpoint}' must be an absolute http or https URL such as http://localhost:4318/v1/metrics (or set OTEL_EXPORTER_OTLP_ENDPOINT).");
        }

        if (options.ExportInterval <= TimeSpan.Zero)
        {
            failures.Add($"PerCpuOtlpExporterOptions.ExportInterval is {options.ExportInterval}; give a positive interval (OTEL_METRIC_EXPORT_INTERVAL, milliseconds).");
        }

        if (options.ExportTimeout <= TimeSpan.Zero)
        {
            failures.Add($"PerCpuOtlpExporterOptions.ExportTimeout is {options.ExportTimeout}; give a positive timeout (OTEL_METRIC_EXPORT_TIMEOUT, milliseconds).");
        }

        if (options.ShutdownTimeout <= TimeSpan.Zero)
        {
            failures.Add($"PerCpuOtlpExporterOptions.ShutdownTimeout is {options.ShutdownTimeout}; give a positive timeout (a few seconds, within the host's ShutdownTimeout).");
        }

        foreach ((string option, TimeSpan value) in new[] { ("ExportInterval", options.ExportInterval), ("ExportTimeout", options.ExportTimeout), ("ShutdownTimeout", options.ShutdownTimeout) })
        {
            if (value > MaxPeriod)
            {
                failures.Add($"PerCpuOtlpExporterOptions.{option} is {value}; give at most {MaxPeriod.TotalDays:0} days.");
            }
        }

        if (options.RetryInitialBackoff < MinBackoff)
        {
            failures.Add($"PerCpuOtlpExporterOptions.RetryInitialBackoff is {options.RetryInitialBackoff}; give at least {MinBackoff.TotalMilliseconds:0} ms (default 1 s), so a collector that answers at once cannot cause a retry storm.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
