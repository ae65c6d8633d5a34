namespace PerCpu.AspNetCore;

/// <summary>Options of the PerCpu request metrics (<c>services.AddPerCpuMetrics(o => ...)</c>), validated at startup.</summary>
public sealed class PerCpuMetricsOptions
{
    /// <summary>
    /// Classic (<c>le</c>) bucket boundaries of <c>http.server.request.duration</c>, in seconds, strictly increasing, each in
    /// (2^<see cref="HistogramMinExponent"/>, 2^<see cref="HistogramMaxExponent"/>]. Counts at these boundaries are exact.
    /// Default: ASP.NET Core's advice, 5 ms to 10 s.
    /// </summary>
    public IList<double> DurationBoundaries { get; set; } = [.. HistogramLayout.AspNetCoreRequestDurationBoundaries];

    /// <summary>Exponential resolution of the duration histogram: 2^scale buckets per power of two, 0 to 8. Default 3 (4.3% quantile error).</summary>
    public int HistogramScale { get; set; } = 3;

    /// <summary>Durations at or below 2^this many seconds land in the underflow bucket. Default -17 (7.6 µs).</summary>
    public int HistogramMinExponent { get; set; } = -17;

    /// <summary>Durations above 2^this many seconds land in the overflow bucket. Default 8 (256 s).</summary>
    public int HistogramMaxExponent { get; set; } = 8;

    /// <summary>
    /// Hard cap on the series of each metric. Requests that would create a series beyond it are recorded in one overflow
    /// series labelled <c>otel.metric.overflow="true"</c>, so nothing is lost and memory stays bounded. Default 2000,
    /// OpenTelemetry's default cardinality limit.
    /// </summary>
    public int MaxSeriesPerMetric { get; set; } = 2000;

    /// <summary>
    /// The longest label value exposed, in characters: a Meter API tag value or a labelled family's value that is
    /// longer is cut to this length, its last character <c>…</c>, and the series counted in
    /// <c>percpu_label_values_truncated_total</c>, so one huge value cannot make every scrape huge. Default 1024; 16 to
    /// 65536.
    /// </summary>
    public int MaxLabelValueLength { get; set; } = 1024;

    /// <summary>
    /// How long a scrape or an export waits for the observable callbacks it starts (the <c>System.Runtime</c> meter's,
    /// the app's <c>CreateObservableGauge</c> ones). One still running after it is reported from its last completed
    /// values, logged and not started again until it returns; the scrape answers with everything else. Default 1 s;
    /// above 0 and at most 60 s.
    /// </summary>
    public TimeSpan ObservableCallbackBudget { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Windows, in seconds, of the request rates computed at scrape time from a per-second ring. Default 1, 10, 60.</summary>
    public IList<int> RateWindowsSeconds { get; set; } = [1, 10, 60];

    /// <summary>
    /// The <c>http.route</c> value of requests that matched no endpoint, and of endpoints without a route template
    /// (routing's 405, custom endpoints); never the raw path. Null or empty (the default): such requests carry no
    /// <c>http.route</c>, as ASP.NET Core and OpenTelemetry report them, and a request that reached the end of the
    /// pipeline unhandled carries <c>aspnetcore.request.is_unhandled="true"</c> either way. Set a value (for example
    /// <c>"unmatched"</c>) to give dashboards a route to group by.
    /// </summary>
    public string? UnmatchedRoute { get; set; }

    /// <summary>
    /// Meters whose instruments (<c>Counter&lt;T&gt;</c>, <c>Histogram&lt;T&gt;</c>, <c>UpDownCounter&lt;T&gt;</c>, <c>Gauge&lt;T&gt;</c>,
    /// observable instruments) PerCpu aggregates per CPU and exposes on <c>/metrics</c> and through its OTLP exporter,
    /// named by OpenTelemetry's Prometheus rules (<c>shop.orders</c> with unit <c>{order}</c> becomes
    /// <c>shop_orders_total</c>). A trailing <c>*</c> matches a prefix. Add your own (<c>o.Meters.Add("Shop")</c>); remove
    /// the defaults you do not want, or <c>Clear()</c> them. Default: <see cref="DefaultMeters"/>: .NET's runtime meter and
    /// ASP.NET Core's meters other than hosting (whose request metrics PerCpu records itself).
    /// <c>Microsoft.AspNetCore.Hosting</c> and PerCpu's own <c>PerCpu.AspNetCore</c> meter are never collected this way.
    /// </summary>
    public IList<string> Meters { get; set; } = [.. DefaultMeters];

    /// <summary>
    /// Classic bucket boundaries of the Meter API histograms whose instrument gives no advice
    /// (<c>InstrumentAdvice.HistogramBucketBoundaries</c>): positive, finite, strictly increasing. Null (the default):
    /// ASP.NET Core's duration boundaries for unit <c>s</c>, OpenTelemetry's defaults (5 to 10000) otherwise.
    /// </summary>
    public IList<double>? HistogramBoundaries { get; set; }

    /// <summary>
    /// The scale of the native histograms in the Prometheus protobuf scrape (what Prometheus asks for with
    /// <c>--enable-feature=native-histograms</c>): 0 to 8 (Prometheus accepts no finer scale). Null (the default): each
    /// histogram's own scale (<see cref="HistogramScale"/> for the request durations). A coarser scale than a histogram's
    /// merges its buckets exactly (<see cref="HistogramSnapshot.Downscale"/>); a finer one is not possible and is ignored.
    /// </summary>
    public int? NativeHistogramScale { get; set; }

    /// <summary>
    /// Whether a request that runs under a sampled <see cref="System.Diagnostics.Activity"/> (a W3C <c>traceparent</c> with
    /// the sampled flag, or a tracing SDK's sampling decision) leaves an exemplar in its duration bucket: the latest per
    /// bucket and CPU, exposed in OpenMetrics and protobuf scrapes and in OTLP. Default true; a request with no sampled
    /// activity pays one check. Something must create the request activity: ASP.NET Core does when a tracer listens to
    /// <c>Microsoft.AspNetCore</c> (OpenTelemetry tracing, for example).
    /// </summary>
    public bool Exemplars { get; set; } = true;

    /// <summary>The meters collected by default.</summary>
    public static IReadOnlyList<string> DefaultMeters { get; } =
    [
        "System.Runtime",
        "Microsoft.AspNetCore.Server.Kestrel",
        "Microsoft.AspNetCore.Routing",
        "Microsoft.AspNetCore.Diagnostics",
        "Microsoft.AspNetCore.RateLimiting",
        "Microsoft.AspNetCore.HeaderParsing",
        "Microsoft.AspNetCore.Http.Connections",
        "Microsoft.AspNetCore.Authentication",
        "Microsoft.AspNetCore.Authorization",
        "Microsoft.AspNetCore.Identity",
        "Microsoft.AspNetCore.MemoryPool",
    ];

    /// <summary>
    /// Whether PerCpu gives each request an <see cref="Microsoft.AspNetCore.Http.Features.IHttpMetricsTagsFeature"/> when
    /// ASP.NET Core's hosting layer has not (it does only while something listens to its own meter), so that the app's
    /// custom request tags (and <c>MetricsDisabled</c>) reach PerCpu's request metric. Default true. Setting a feature
    /// makes the request's cached feature lookups start again, but PerCpu then recognises a re-execution of the request
    /// by it instead of reading two other features, so on the 2-vCPU VM of benchmarks/README.md providing it measured
    /// no dearer than not. Off: no feature is set, and re-executions are found by the exception handler's and status
    /// pages' features. Tags still count whenever the hosting layer
    /// provides the feature.
    /// </summary>
    public bool ProvideMetricsTagsFeature { get; set; } = true;

    /// <summary>
    /// Where request durations take their timestamps from. Default <see cref="PerCpuClockSource.Auto"/>: the process
    /// default of <see cref="PerCpuClock"/> (the CPU's time-stamp counter where the kernel keeps time with it and a check
    /// across every CPU agreed, and it is cheaper; else <see cref="System.Diagnostics.Stopwatch"/>; the
    /// <c>PERCPU_CLOCK</c> environment variable sets that default). A source that is unavailable here falls back to the
    /// Stopwatch and says so on <c>/metrics</c> (<c>percpu_clock</c>) and in <see cref="PerCpuClock.Resolve"/>'s reason.
    /// </summary>
    public PerCpuClockSource Clock { get; set; } = PerCpuClockSource.Auto;

    /// <summary>Whether the scrape endpoint mapped by <c>MapPerCpuMetrics</c> is left out of the request metrics. Default true.</summary>
    public bool ExcludeScrapeEndpoint { get; set; } = true;

    /// <summary>
    /// The most scrapes answered at once; one more is answered at once with 503 and <c>Retry-After: 1</c> and counted
    /// in <c>percpu_scrapes_refused_total</c>. Concurrent scrapes share renderings (readers pin at most four copies, each
    /// until <see cref="ScrapeTimeout"/>), so this bounds connections more than memory. Default 64; 1 to 1000.
    /// </summary>
    public int MaxConcurrentScrapes { get; set; } = 64;

    /// <summary>
    /// The longest a scrape may take to send its response: a reader that has not taken every byte by then is cut off
    /// (the connection aborted) and counted in <c>percpu_scrapes_cut_total</c>. Default 30 s; above 0 and at most 10 min.
    /// </summary>
    public TimeSpan ScrapeTimeout { get; set; } = TimeSpan.FromSeconds(30);
}
