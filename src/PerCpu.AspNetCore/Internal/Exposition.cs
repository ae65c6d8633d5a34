using System.Buffers;
using System.Globalization;
using System.Text;
using PerCpu.Formats;
using PerCpu.Families;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// The scrape: the HTTP metrics, then the application's families (the registry, with the Meter API listener), then
/// PerCpu's totals, all through one <see cref="PrometheusTextWriter"/>. Reads never block writers: every value comes
/// from a lock-free fold of the shards.
/// </summary>
internal static class Exposition
{
    public const string TextContentType = PrometheusTextWriter.TextContentType;
    public const string OpenMetricsContentType = PrometheusTextWriter.OpenMetricsContentType;

    public const string Duration = "http_server_request_duration_seconds";
    public const string Active = "http_server_active_requests";
    public const string Rate = "percpu_http_server_request_rate";
    public const string RouteRate = "percpu_http_server_route_request_rate";

    /// <summary>
    /// Whether the Accept header prefers OpenMetrics to the 0.0.4 text format, by q-value (a tie goes to OpenMetrics, as
    /// the more precise format). Only versions PerCpu writes count (OpenMetrics 1.0.0 or 0.0.1, text 0.0.4);
    /// <c>*/*</c> and <c>text/*</c> count for text; media types PerCpu does not write (protobuf) are ignored. A missing,
    /// malformed or oversized header gets text.
    /// </summary>
    public static bool WantsOpenMetrics(string? accept) => Negotiate(accept) == ScrapeFormat.OpenMetrics;

    /// <summary>
    /// The format the Accept header prefers by q-value: the Prometheus protobuf format (delimited MetricFamily messages,
    /// with native histograms), OpenMetrics 1.0.0, or the 0.0.4 text format (also for a missing, malformed or
    /// oversized header). Ties go to the more precise format: protobuf, then OpenMetrics.
    /// </summary>
    public static ScrapeFormat Negotiate(string? accept)
    {
        if (string.IsNullOrEmpty(accept) || accept.Length > 4096)
        {
            return ScrapeFormat.Text;
        }

        double protobuf = 0, openMetrics = 0, text = 0;
        int ranges = 0;
        foreach (string range in accept.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (++ranges > 64)
            {
                return ScrapeFormat.Text;
            }

            string[] fields = range.Split(';', StringSplitOptions.TrimEntries);
            string media = fields[0];
            double q = 1;
            string? version = null, proto = null, encoding = null;
            foreach (string field in fields.AsSpan(1))
            {
                int eq = field.IndexOf('=', StringComparison.Ordinal);
                if (eq <= 0)
                {
                    continue;
                }

                string name = field[..eq].Trim(), value = field[(eq + 1)..].Trim().Trim('"');
                if (name.Equals("q", StringComparison.OrdinalIgnoreCase))
                {
                    q = double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double parsed) && parsed is >= 0 and <= 1 ? parsed : 0;
                }
                else if (name.Equals("version", StringComparison.OrdinalIgnoreCase))
                {
                    version = value;
                }
                else if (name.Equals("proto", StringComparison.OrdinalIgnoreCase))
                {
                    proto = value;
                }
                else if (name.Equals("encoding", StringComparison.OrdinalIgnoreCase))
                {
                    encoding = value;
                }
            }

            if (media.Equals("application/vnd.google.protobuf", StringComparison.OrdinalIgnoreCase)
                && proto == "io.prometheus.client.MetricFamily" && encoding == "delimited")
            {
                protobuf = Math.Max(protobuf, q);
            }
            else if (media.Equals("application/openmetrics-text", StringComparison.OrdinalIgnoreCase) && version is null or "1.0.0" or "0.0.1")
            {
                openMetrics = Math.Max(openMetrics, q);
            }
            else if ((media.Equals("text/plain", StringComparison.OrdinalIgnoreCase) && version is null or "0.0.4") || media is "*/*" || media.Equals("text/*", StringComparison.OrdinalIgnoreCase))
            {
                text = Math.Max(text, q);
            }
        }

        return protobuf > 0 && protobuf >= openMetrics && protobuf >= text ? ScrapeFormat.Protobuf
            : openMetrics > 0 && openMetrics >= text ? ScrapeFormat.OpenMetrics
            : ScrapeFormat.Text;
    }

    /// <summary>The whole scrape in <paramref name="format"/> into <paramref name="output"/>.</summary>
    /// <returns>The families left out because another family took one of their names.</returns>
    public static IReadOnlyList<MetricDescriptor> Write(IBufferWriter<byte> output, HttpMetricsStore store, MetricRegistry? registry, ScrapeFormat format)
    {
        if (format != ScrapeFormat.Protobuf)
        {
            return Write(output, store, registry, format == ScrapeFormat.OpenMetrics);
        }

        using var writer = new PrometheusProtobufWriter(output, store.Options.NativeHistogramScale);
        store.Producer.Collect(writer);
        registry?.Collect(writer);
        writer.Finish();
        return writer.LeftOut;
    }

    /// <summary>The scrape as UTF-8 into <paramref name="output"/>.</summary>
    /// <returns>The families left out because another family took one of their names.</returns>
    public static IReadOnlyList<MetricDescriptor> Write(IBufferWriter<byte> output, HttpMetricsStore store, MetricRegistry? registry, bool openMetrics)
    {
        var writer = new PrometheusTextWriter(output, openMetrics);
        store.Producer.Collect(writer);
        registry?.Collect(writer);
        writer.Finish();
        return writer.LeftOut;
    }

    /// <summary>The scrape as a string (tests, benchmarks).</summary>
    public static string WriteString(HttpMetricsStore store, MetricRegistry? registry, bool openMetrics)
    {
        var buffer = new ArrayBufferWriter<byte>();
        Write(buffer, store, registry, openMetrics);
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>
    /// The label set of a duration series: PerCpu's labels in the order the scrape has always written them
    /// (<c>aspnetcore.request.is_unhandled</c> first and <c>http.route</c> only where set, <c>error.type</c> last), then
    /// the series' custom request tags.
    /// </summary>
    internal static MetricLabels SeriesLabels(RequestSeries s)
    {
        if (s.IsOverflow)
        {
            return MetricLabels.Overflow;
        }

        var names = new List<string>(8);
        var values = new List<string>(8);
        var raw = new List<object>(8);
        void Add(string name, string value, object typed)
        {
            names.Add(name);
            values.Add(value);
            raw.Add(typed);
        }

        if (s.Unhandled)
        {
            Add("aspnetcore.request.is_unhandled", "true", true);
        }

        Add("http.request.method", s.Method, s.Method);
        if (s.Route is not null)
        {
            Add("http.route", s.Route, s.Route);
        }

        Add("http.response.status_code", s.Status, s.StatusCode);
        Add("network.protocol.version", s.Protocol, s.Protocol);
        Add("url.scheme", s.Scheme, s.Scheme);
        if (s.ErrorType is not null)
        {
            Add("error.type", s.ErrorType, s.ErrorType);
        }

        if (s.CustomTags is { } custom)
        {
            for (int i = 0; i < custom.Count; i++)
            {
                Add(custom.Names[i], custom.Values[i], custom.RawValues[i]);
            }
        }

        return new MetricLabels(names, values, raw);
    }

    public static string Number(double value) => PrometheusTextWriter.FormatNumber(value);

    public static string Escape(string value) => PrometheusTextWriter.EscapeLabelValue(value);
}

/// <summary>The scrape formats PerCpu writes.</summary>
internal enum ScrapeFormat
{
    Text,
    OpenMetrics,
    Protobuf,
}

/// <summary>
/// PerCpu's HTTP metrics as families, for every writer: <c>http.server.request.duration</c>,
/// <c>http.server.active_requests</c>, the request rates and the store's self-metrics.
/// </summary>
internal sealed class HttpMetricsProducer(HttpMetricsStore store) : IMetricsProducer
{
    public static readonly MetricDescriptor Duration = new("http.server.request.duration", MetricType.Histogram, "s", "Duration of HTTP server requests.");
    public static readonly MetricDescriptor Active = new("http.server.active_requests", MetricType.UpDownCounter, "{request}", "Number of active HTTP server requests.");
    public static readonly MetricDescriptor Rate = new("percpu.http.server.request_rate", MetricType.Gauge, null, "Requests per second over the window (windowed average or EWMA), all routes.");
    public static readonly MetricDescriptor RouteRate = new("percpu.http.server.route_request_rate", MetricType.Gauge, null, "Requests per second over the window (windowed average or EWMA), by route.");
    public static readonly MetricDescriptor Strategy = new("percpu.processor_id.strategy", MetricType.Gauge, null, "The CPU-id strategy in use (value 1), the number of per-CPU slots, and the write path (rseq sections or interlocked).");
    public static readonly MetricDescriptor Clock = new("percpu.clock", MetricType.Gauge, null, "The source of the request timestamps (value 1): Rdtsc (the CPU's time-stamp counter, calibrated) or Stopwatch.");
    public static readonly MetricDescriptor Series = new("percpu.series", MetricType.Gauge, null, "Series of http.server.request.duration, excluding the overflow series.");
    public static readonly MetricDescriptor OverflowRecords = new("percpu.series.overflow_records", MetricType.Counter, null, "Requests recorded in the overflow series because the series cap was reached.");
    public static readonly MetricDescriptor RecordingFailures = new("percpu.recording_failures", MetricType.Counter, null, "Failures of the middleware's own recording; expected to stay 0.");
    public static readonly MetricDescriptor ScrapesRefused = new("percpu.scrapes_refused", MetricType.Counter, null, "Scrapes answered 503 because MaxConcurrentScrapes were in flight.");
    public static readonly MetricDescriptor ScrapesCut = new("percpu.scrapes_cut", MetricType.Counter, null, "Scrapes cut off because the reader had not taken the response within ScrapeTimeout.");

    /// <summary>Every family this producer writes, in order (the meter bridge publishes one instrument per family).</summary>
    public static readonly IReadOnlyList<MetricDescriptor> Families = [Duration, Active, Rate, RouteRate, Strategy, Clock, Series, OverflowRecords, RecordingFailures, ScrapesRefused, ScrapesCut];

    private readonly MetricLabels[] _active = BuildActiveLabels();
    private readonly Dictionary<(EndpointMetrics? Route, string Window), MetricLabels> _rateLabels = [];

    public void Collect(IMetricsWriter writer)
    {
        writer.BeginFamily(Duration);
        foreach (RequestSeries s in store.RecordedSeries())
        {
            if (s.Duration.ShardCount == 0)
            {
                continue; // never written: the overflow series below the cap, or a series only its tagged ones recorded in
            }

            writer.WriteHistogram(s.SeriesLabels, s.Duration);
        }

        writer.BeginFamily(Active);
        for (int m = 0; m < Labels.Methods.Length; m++)
        {
            for (int sc = 0; sc < Labels.Schemes.Length; sc++)
            {
                long value = store.Active[(m * 2) + sc].Sum();
                if (value != 0 || (m == 1 && sc == 0))
                {
                    writer.WritePoint(_active[(m * 2) + sc], value);
                }
            }
        }

        List<(EndpointMetrics? Route, string Window, double Rate)> rates = store.Rates.Read();
        writer.BeginFamily(Rate);
        foreach ((EndpointMetrics? route, string window, double rate) in rates)
        {
            if (route is null)
            {
                writer.WritePoint(RateLabels(null, window), rate);
            }
        }

        writer.BeginFamily(RouteRate);
        foreach ((EndpointMetrics? route, string window, double rate) in rates)
        {
            if (route is not null)
            {
                writer.WritePoint(RateLabels(route, window), rate);
            }
        }

        writer.BeginFamily(Strategy);
        writer.WritePoint(new MetricLabels(["strategy", "slots", "write_path"], [ProcessorId.Strategy.ToString(), ProcessorId.SlotCount.ToString(CultureInfo.InvariantCulture), ProcessorId.WritePath.ToString()]), 1L);
        writer.BeginFamily(Clock);
        writer.WritePoint(new MetricLabels(["source"], [store.Clock.ToString()]), 1L);
        writer.BeginFamily(Series);
        writer.WritePoint(MetricLabels.Empty, (long)store.SeriesCount);
        writer.BeginFamily(OverflowRecords);
        writer.WritePoint(MetricLabels.Empty, store.OverflowRecords);
        writer.BeginFamily(RecordingFailures);
        writer.WritePoint(MetricLabels.Empty, store.RecordingFailures);
        writer.BeginFamily(ScrapesRefused);
        writer.WritePoint(MetricLabels.Empty, store.ScrapesRefused);
        writer.BeginFamily(ScrapesCut);
        writer.WritePoint(MetricLabels.Empty, store.ScrapesCut);
    }

    /// <summary>The labels of a rate: the total's (null), or a route's as its request series name it.</summary>
    private MetricLabels RateLabels(EndpointMetrics? route, string window)
    {
        lock (_rateLabels)
        {
            if (!_rateLabels.TryGetValue((route, window), out MetricLabels? labels))
            {
                labels = route is null ? new MetricLabels(["window"], [window])
                    : route.Route is { } text ? new MetricLabels(["http.route", "window"], [text, window])
                    : route.Unhandled ? new MetricLabels(["aspnetcore.request.is_unhandled", "window"], ["true", window])
                    : new MetricLabels(["window"], [window]); // no route, as its request series: unique in this family
                _rateLabels[(route, window)] = labels;
            }

            return labels;
        }
    }

    private static MetricLabels[] BuildActiveLabels()
    {
        var labels = new MetricLabels[Labels.Methods.Length * Labels.Schemes.Length];
        for (int m = 0; m < Labels.Methods.Length; m++)
        {
            for (int sc = 0; sc < Labels.Schemes.Length; sc++)
            {
                labels[(m * 2) + sc] = new MetricLabels(["http.request.method", "url.scheme"], [Labels.Methods[m], Labels.Schemes[sc]]);
            }
        }

        return labels;
    }
}
