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

    /// <summary>Windows, in seconds, of the request rates computed at scrape time from a per-second ring. Default 1, 10, 60.</summary>
    public IList<int> RateWindowsSeconds { get; set; } = [1, 10, 60];

    /// <summary>The <c>http.route</c> value of requests that matched no endpoint (never the raw path). Default <c>unmatched</c>.</summary>
    public string UnmatchedRoute { get; set; } = "unmatched";

    /// <summary>Whether the scrape endpoint mapped by <c>MapPerCpuMetrics</c> is left out of the request metrics. Default true.</summary>
    public bool ExcludeScrapeEndpoint { get; set; } = true;
}
