using PerCpu.Families;

namespace PerCpu.AspNetCore.Otlp;

/// <summary>One family's points as read at one collection: numbers, or histogram snapshots.</summary>
internal sealed record CollectedFamily(MetricDescriptor Descriptor, List<(MetricLabels Labels, double? Double, long Long)> Points, List<(MetricLabels Labels, HistogramSnapshot Snapshot)> Histograms);

/// <summary>
/// Reads every family of the <see cref="MetricRegistry"/> (the app's labelled families and the Meter API listener) into
/// plain data for the OTLP encoder. It knows families and points, nothing of where they come from. Families are sent
/// with cumulative temporality whatever the exporter's preference (their totals are never reset, so a lost export
/// loses nothing: the next one carries the totals).
/// </summary>
internal sealed class OtlpFamilyCollector : IMetricsWriter
{
    private CollectedFamily? _current;

    public List<CollectedFamily> Families { get; } = [];

    /// <summary>A family the exporter sends by another path (the delta-capable request durations), left out here.</summary>
    public MetricDescriptor? Skip { get; init; }

    /// <summary>Reads every producer's families, in order.</summary>
    public static List<CollectedFamily> Collect(MetricDescriptor? skip, params IMetricsProducer?[] producers)
    {
        var collector = new OtlpFamilyCollector { Skip = skip };
        foreach (IMetricsProducer? producer in producers)
        {
            producer?.Collect(collector);
        }

        return collector.Families;
    }

    public void BeginFamily(MetricDescriptor descriptor)
    {
        // Two instruments with one name: the first wins, as on /metrics.
        if (ReferenceEquals(descriptor, Skip) || Families.Exists(f => f.Descriptor.Name == descriptor.Name))
        {
            _current = null;
            return;
        }

        _current = new CollectedFamily(descriptor, [], []);
        Families.Add(_current);
    }

    public void WritePoint(MetricLabels labels, double value) => _current?.Points.Add((labels, value, 0));

    public void WritePoint(MetricLabels labels, long value) => _current?.Points.Add((labels, null, value));

    public void WriteHistogram(MetricLabels labels, PerCpuHistogram histogram) => _current?.Histograms.Add((labels, histogram.Snapshot()));

    public void AddInvalid(long count)
    {
    }
}
