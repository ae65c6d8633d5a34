using System.Diagnostics.Metrics;
using System.Globalization;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// The <c>PerCpu.AspNetCore</c> meter: observable instruments whose callbacks fold the per-CPU shards at collection time,
/// so a <see cref="MeterListener"/> (the OpenTelemetry SDK, dotnet-counters, <c>MetricCollector</c>) sees the same
/// numbers as <c>/metrics</c>. <c>System.Diagnostics.Metrics</c> has no observable histogram, so the duration histogram
/// is published as three observable counters: <c>http.server.request.duration.bucket</c> (cumulative count per
/// <c>le</c> boundary, including <c>+Inf</c>), <c>.count</c> and <c>.sum</c>.
/// </summary>
internal sealed class MeterBridge : IDisposable
{
    public const string MeterName = "PerCpu.AspNetCore";

    private readonly HttpMetricsStore _store;

    public MeterBridge(IMeterFactory factory, HttpMetricsStore store)
    {
        _store = store;
        Meter = factory.Create(new MeterOptions(MeterName) { Version = typeof(MeterBridge).Assembly.GetName().Version?.ToString() });
        Meter.CreateObservableCounter("http.server.request.duration.bucket", Buckets, "{request}", "Requests with a duration at or below the le boundary (cumulative histogram buckets).");
        Meter.CreateObservableCounter("http.server.request.duration.count", Counts, "{request}", "Requests recorded in http.server.request.duration.");
        Meter.CreateObservableCounter("http.server.request.duration.sum", Sums, "s", "Sum of the durations of HTTP server requests.");
        Meter.CreateObservableUpDownCounter("http.server.active_requests", ActiveRequests, "{request}", "Number of active HTTP server requests.");
        Meter.CreateObservableGauge("percpu.http.server.request_rate", RequestRates, "{request}/s", "Requests per second over a window, by route (absent: all routes).");
        Meter.CreateObservableGauge("percpu.series", () => (long)store.SeriesCount, "{series}", "Series of http.server.request.duration.");
        Meter.CreateObservableCounter("percpu.series.overflow_records", () => store.OverflowRecords, "{request}", "Requests recorded in the overflow series.");
        Meter.CreateObservableGauge("percpu.processor_id.strategy", () => new Measurement<int>(1, new("strategy", ProcessorId.Strategy.ToString()), new("slots", ProcessorId.SlotCount)), null, "The CPU-id strategy in use (value 1) and the number of per-CPU slots.");
    }

    public Meter Meter { get; }

    public void Dispose() => Meter.Dispose();

    private IEnumerable<(RequestSeries Series, HistogramSnapshot Snapshot)> Snapshots() =>
        _store.RecordedSeries()
            .Select(s => (s, s.Duration.Snapshot()))
            .Where(x => !x.s.IsOverflow || x.Item2.Count > 0);

    private IEnumerable<Measurement<long>> Buckets()
    {
        foreach ((RequestSeries s, HistogramSnapshot snap) in Snapshots())
        {
            for (int i = 0; i < snap.ExplicitBoundaries.Count; i++)
            {
                yield return new Measurement<long>(snap.CumulativeCounts[i], Tags(s, snap.ExplicitBoundaries[i].ToString("R", CultureInfo.InvariantCulture)));
            }

            yield return new Measurement<long>(snap.Count, Tags(s, "+Inf"));
        }
    }

    private IEnumerable<Measurement<long>> Counts() => Snapshots().Select(x => new Measurement<long>(x.Snapshot.Count, Tags(x.Series, null)));

    private IEnumerable<Measurement<double>> Sums() => Snapshots().Select(x => new Measurement<double>(x.Snapshot.Sum, Tags(x.Series, null)));

    private IEnumerable<Measurement<long>> ActiveRequests() =>
        _store.ActiveRequests().Select(a => new Measurement<long>(a.Value, new("http.request.method", a.Method), new("url.scheme", a.Scheme)));

    private IEnumerable<Measurement<double>> RequestRates() =>
        _store.Rates.Read().Select(r => r.Route is null
            ? new Measurement<double>(r.Rate, new KeyValuePair<string, object?>("window", r.Window))
            : new Measurement<double>(r.Rate, new("http.route", r.Route), new("window", r.Window)));

    private static KeyValuePair<string, object?>[] Tags(RequestSeries s, string? le)
    {
        if (s.IsOverflow)
        {
            return le is null ? [new("otel.metric.overflow", true)] : [new("otel.metric.overflow", true), new("le", le)];
        }

        var tags = new List<KeyValuePair<string, object?>>(7)
        {
            new("http.request.method", s.Method),
            new("http.route", s.Route),
            new("http.response.status_code", s.StatusCode),
            new("url.scheme", s.Scheme),
            new("network.protocol.version", s.Protocol),
        };
        if (s.ErrorType is not null)
        {
            tags.Add(new("error.type", s.ErrorType));
        }

        if (le is not null)
        {
            tags.Add(new("le", le));
        }

        return [.. tags];
    }
}
