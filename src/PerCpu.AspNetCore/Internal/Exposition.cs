using System.Globalization;
using System.Text;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// Writes the Prometheus text format 0.0.4 or OpenMetrics 1.0.0 from the per-CPU store. Reads never block writers: every
/// value comes from a lock-free fold of the shards (see <see cref="PerCpuHistogram.Snapshot"/>). Numbers are
/// culture-invariant; label values are escaped.
/// </summary>
internal static class Exposition
{
    public const string TextContentType = "text/plain; version=0.0.4; charset=utf-8";
    public const string OpenMetricsContentType = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    public const string Duration = "http_server_request_duration_seconds";
    public const string Active = "http_server_active_requests";
    public const string Rate = "percpu_http_server_request_rate";
    public const string RouteRate = "percpu_http_server_route_request_rate";

    /// <summary>Whether the Accept header asks for OpenMetrics (as Prometheus does when it prefers it).</summary>
    public static bool WantsOpenMetrics(string? accept) =>
        accept is not null && accept.Contains("application/openmetrics-text", StringComparison.OrdinalIgnoreCase);

    /// <summary>The scrape as text. The builder grows in chunks of at most 8000 characters, so it never lands on the large-object heap.</summary>
    public static StringBuilder Write(HttpMetricsStore store, bool openMetrics)
    {
        var w = new StringBuilder();

        // http.server.request.duration
        Header(w, Duration, "histogram", "Duration of HTTP server requests.", openMetrics ? "seconds" : null);
        string[] le = [.. store.Layout.ExplicitBoundaries.Select(b => ",le=\"" + Number(b) + "\"")];
        long[] cumulative = new long[le.Length];
        long invalid = 0;
        foreach (RequestSeries s in store.RecordedSeries())
        {
            long count = s.Duration.ReadExplicitBuckets(cumulative, out double sum, out long seriesInvalid);
            invalid += seriesInvalid;
            if (count == 0 && s.IsOverflow)
            {
                continue;
            }

            string labels = s.PrometheusLabels;
            for (int i = 0; i < le.Length; i++)
            {
                w.Append(Duration).Append("_bucket{").Append(labels).Append(le[i]).Append("} ").Append(CultureInfo.InvariantCulture, $"{cumulative[i]}").Append('\n');
            }

            w.Append(Duration).Append("_bucket{").Append(labels).Append(",le=\"+Inf\"} ").Append(CultureInfo.InvariantCulture, $"{count}").Append('\n');
            w.Append(Duration).Append("_sum{").Append(labels).Append("} ").Append(CultureInfo.InvariantCulture, $"{sum:R}").Append('\n');
            w.Append(Duration).Append("_count{").Append(labels).Append("} ").Append(CultureInfo.InvariantCulture, $"{count}").Append('\n');
        }

        // http.server.active_requests: an up-down counter, a gauge in Prometheus.
        Header(w, Active, "gauge", "Number of active HTTP server requests.", null);
        foreach ((string method, string scheme, long value) in store.ActiveRequests())
        {
            Sample(w, Active, $"http_request_method=\"{method}\",url_scheme=\"{scheme}\"", null, null, value);
        }

        // Request rates, computed from the per-second ring.
        List<(string? Route, string Window, double Rate)> rates = store.Rates.Read();
        Header(w, Rate, "gauge", "Requests per second over the window (windowed average or EWMA), all routes.", null);
        foreach ((string? route, string window, double rate) in rates.Where(r => r.Route is null))
        {
            Sample(w, Rate, $"window=\"{window}\"", null, null, rate);
        }

        Header(w, RouteRate, "gauge", "Requests per second over the window (windowed average or EWMA), by route.", null);
        foreach ((string? route, string window, double rate) in rates.Where(r => r.Route is not null))
        {
            Sample(w, RouteRate, $"http_route=\"{Escape(route!)}\",window=\"{window}\"", null, null, rate);
        }

        // Self-metrics.
        Header(w, "percpu_processor_id_strategy", "gauge", "The CPU-id strategy in use (value 1) and the number of per-CPU slots.", null);
        Sample(w, "percpu_processor_id_strategy", $"strategy=\"{ProcessorId.Strategy}\",slots=\"{ProcessorId.SlotCount.ToString(CultureInfo.InvariantCulture)}\"", null, null, 1);
        Header(w, "percpu_series", "gauge", "Series of http.server.request.duration, excluding the overflow series.", null);
        Sample(w, "percpu_series", "", null, null, store.SeriesCount);
        Counter(w, "percpu_series_overflow_records", "Requests recorded in the overflow series because the series cap was reached.", store.OverflowRecords, openMetrics);
        Counter(w, "percpu_invalid_values", "Invalid durations (NaN, infinite, negative) counted and left out of the histograms.", invalid, openMetrics);
        Counter(w, "percpu_recording_failures", "Failures of the middleware's own recording; expected to stay 0.", store.RecordingFailures, openMetrics);

        if (openMetrics)
        {
            w.Append("# EOF\n");
        }

        return w;
    }

    internal static string SeriesLabels(RequestSeries s)
    {
        if (s.IsOverflow)
        {
            return "otel_metric_overflow=\"true\"";
        }

        var b = new StringBuilder(128);
        b.Append("http_request_method=\"").Append(s.Method)
         .Append("\",http_route=\"").Append(Escape(s.Route))
         .Append("\",http_response_status_code=\"").Append(s.Status)
         .Append("\",network_protocol_version=\"").Append(s.Protocol)
         .Append("\",url_scheme=\"").Append(s.Scheme).Append('"');
        if (s.ErrorType is not null)
        {
            b.Append(",error_type=\"").Append(Escape(s.ErrorType)).Append('"');
        }

        return b.ToString();
    }

    private static void Header(StringBuilder w, string name, string type, string help, string? unit)
    {
        w.Append("# HELP ").Append(name).Append(' ').Append(EscapeHelp(help)).Append('\n');
        w.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
        if (unit is not null)
        {
            w.Append("# UNIT ").Append(name).Append(' ').Append(unit).Append('\n');
        }
    }

    private static void Counter(StringBuilder w, string family, string help, long value, bool openMetrics)
    {
        // OpenMetrics names the family without _total and the sample with it; the 0.0.4 text format names both with it.
        Header(w, openMetrics ? family : family + "_total", "counter", help, null);
        Sample(w, family + "_total", "", null, null, value);
    }

    private static void Sample(StringBuilder w, string name, string labels, string? extraName, string? extraValue, double value)
    {
        w.Append(name);
        if (labels.Length > 0 || extraName is not null)
        {
            w.Append('{').Append(labels);
            if (extraName is not null)
            {
                w.Append(labels.Length > 0 ? "," : "").Append(extraName).Append("=\"").Append(extraValue).Append('"');
            }

            w.Append('}');
        }

        w.Append(' ').Append(Number(value)).Append('\n');
    }

    public static string Number(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf" : double.IsNegativeInfinity(value) ? "-Inf" : double.IsNaN(value) ? "NaN" : value.ToString("R", CultureInfo.InvariantCulture);

    public static string Escape(string value) =>
        value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private static string EscapeHelp(string value) =>
        value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
}
