using System.Diagnostics.Metrics;
using System.Globalization;
using PerCpu.Families;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// The <c>PerCpu.AspNetCore</c> meter: one observable instrument per family of the HTTP producer, whose callback folds the
/// per-CPU shards at collection time, so a <see cref="MeterListener"/> (the OpenTelemetry SDK, dotnet-counters,
/// <c>MetricCollector</c>) sees the same numbers as <c>/metrics</c>. The bridge knows families, not HTTP: counters become
/// observable counters, up-down counters observable up-down counters, gauges observable gauges (double). Meter API has
/// no observable histogram, so a histogram family is published as three observable counters: <c>NAME.bucket</c>
/// (cumulative count per <c>le</c> boundary, including <c>+Inf</c>), <c>NAME.count</c> and <c>NAME.sum</c>.
/// </summary>
internal sealed class MeterBridge : IDisposable
{
    public const string MeterName = "PerCpu.AspNetCore";

    public MeterBridge(IMeterFactory factory, HttpMetricsStore store)
    {
        Meter = factory.Create(new MeterOptions(MeterName) { Version = typeof(MeterBridge).Assembly.GetName().Version?.ToString() });
        IMetricsProducer producer = store.Producer;
        foreach (MetricDescriptor d in HttpMetricsProducer.Families)
        {
            string? description = d.Description;
            switch (d.Type)
            {
                case MetricType.Histogram:
                    Meter.CreateObservableCounter(d.Name + ".bucket", () => Buckets(producer, d), "{request}", "Records at or below the le boundary (cumulative histogram buckets) of " + d.Name + ".");
                    Meter.CreateObservableCounter(d.Name + ".count", () => Read(producer, d).Select(p => new Measurement<long>(p.Histogram!.Count, Tags(p.Labels, null))), "{request}", "Records in " + d.Name + ".");
                    Meter.CreateObservableCounter(d.Name + ".sum", () => Read(producer, d).Select(p => new Measurement<double>(p.Histogram!.Sum, Tags(p.Labels, null))), d.Unit, "Sum of " + d.Name + ".");
                    break;
                case MetricType.Counter:
                    Meter.CreateObservableCounter(d.Name, () => Read(producer, d).Select(p => new Measurement<long>((long)p.Value, Tags(p.Labels, null))), d.Unit, description);
                    break;
                case MetricType.UpDownCounter:
                    Meter.CreateObservableUpDownCounter(d.Name, () => Read(producer, d).Select(p => new Measurement<long>((long)p.Value, Tags(p.Labels, null))), d.Unit, description);
                    break;
                default:
                    Meter.CreateObservableGauge(d.Name, () => Read(producer, d).Select(p => new Measurement<double>(p.Value, Tags(p.Labels, null))), d.Unit, description);
                    break;
            }
        }
    }

    public Meter Meter { get; }

    public void Dispose() => Meter.Dispose();

    private static IEnumerable<Measurement<long>> Buckets(IMetricsProducer producer, MetricDescriptor d)
    {
        foreach ((MetricLabels labels, _, HistogramSnapshot? snap) in Read(producer, d))
        {
            for (int i = 0; i < snap!.ExplicitBoundaries.Count; i++)
            {
                yield return new Measurement<long>(snap.CumulativeCounts[i], Tags(labels, snap.ExplicitBoundaries[i].ToString("R", CultureInfo.InvariantCulture)));
            }

            yield return new Measurement<long>(snap.Count, Tags(labels, "+Inf"));
        }
    }

    /// <summary>The points of one family, read now.</summary>
    private static List<(MetricLabels Labels, double Value, HistogramSnapshot? Histogram)> Read(IMetricsProducer producer, MetricDescriptor family)
    {
        var reader = new FamilyReader(family);
        producer.Collect(reader);
        return reader.Points;
    }

    private static KeyValuePair<string, object?>[] Tags(MetricLabels labels, string? le)
    {
        var tags = new KeyValuePair<string, object?>[labels.Count + (le is null ? 0 : 1)];
        for (int i = 0; i < labels.Count; i++)
        {
            tags[i] = new(labels.Names[i], labels.RawValues[i]);
        }

        if (le is not null)
        {
            tags[^1] = new("le", le);
        }

        return tags;
    }

    /// <summary>Keeps the points of one family; histograms as snapshots (the overflow series only once it holds records).</summary>
    private sealed class FamilyReader(MetricDescriptor family) : IMetricsWriter
    {
        private bool _on;

        public List<(MetricLabels Labels, double Value, HistogramSnapshot? Histogram)> Points { get; } = [];

        public void BeginFamily(MetricDescriptor descriptor) => _on = ReferenceEquals(descriptor, family);

        public void WritePoint(MetricLabels labels, double value)
        {
            if (_on)
            {
                Points.Add((labels, value, null));
            }
        }

        public void WritePoint(MetricLabels labels, long value)
        {
            if (_on)
            {
                Points.Add((labels, value, null));
            }
        }

        public void WriteHistogram(MetricLabels labels, PerCpuHistogram histogram)
        {
            if (_on)
            {
                Points.Add((labels, 0, histogram.Snapshot()));
            }
        }

        public void AddInvalid(long count)
        {
        }
    }
}
