using PerCpu.Families;

namespace PerCpu.AspNetCore.Otlp;

/// <summary>
/// One family's points as read at one collection: numbers, or histogram snapshots. <see cref="Delta"/>: the points are
/// changes since each one's start (a start of 0 means the process start); otherwise totals since the process start.
/// </summary>
internal sealed record CollectedFamily(MetricDescriptor Descriptor, List<(MetricLabels Labels, double? Double, long Long, ulong Start)> Points, List<(MetricLabels Labels, HistogramSnapshot Snapshot, ulong Start)> Histograms, bool Delta = false);

/// <summary>
/// Reads every family of the <see cref="MetricRegistry"/> (the app's labelled families and the Meter API listener) into
/// plain data for the OTLP encoder. It knows families and points, nothing of where they come from. With
/// <see cref="Deltas"/>, counters and histograms are read as changes (OpenTelemetry's delta preference: up-down counters
/// and gauges stay cumulative); without, every family is cumulative (its totals are never reset, so a lost export loses
/// nothing: the next one carries the totals).
/// </summary>
internal sealed class OtlpFamilyCollector : IMetricsWriter
{
    private CollectedFamily? _current;

    public List<CollectedFamily> Families { get; } = [];

    /// <summary>A family the exporter sends by another path (the delta-capable request durations), left out here.</summary>
    public MetricDescriptor? Skip { get; init; }

    /// <summary>The delta state of the exporter, or null for cumulative temporality.</summary>
    public FamilyDeltas? Deltas { get; init; }

    /// <summary>Reads every producer's families, in order.</summary>
    public static List<CollectedFamily> Collect(MetricDescriptor? skip, FamilyDeltas? deltas, params IMetricsProducer?[] producers)
    {
        var collector = new OtlpFamilyCollector { Skip = skip, Deltas = deltas };
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

        bool delta = Deltas is not null && descriptor.Type is MetricType.Counter or MetricType.Histogram;
        _current = new CollectedFamily(descriptor, [], [], delta);
        Families.Add(_current);
    }

    public void WritePoint(MetricLabels labels, double value)
    {
        if (_current is not { } f)
        {
            return;
        }

        if (!f.Delta)
        {
            f.Points.Add((labels, value, 0, 0));
        }
        else if (Deltas!.Sum(f.Descriptor, labels, value, 0, isDouble: true) is { } d)
        {
            f.Points.Add((labels, d.Double, 0, d.Start));
        }
    }

    public void WritePoint(MetricLabels labels, long value)
    {
        if (_current is not { } f)
        {
            return;
        }

        if (!f.Delta)
        {
            f.Points.Add((labels, null, value, 0));
        }
        else if (Deltas!.Sum(f.Descriptor, labels, 0, value, isDouble: false) is { } d)
        {
            f.Points.Add((labels, null, d.Long, d.Start));
        }
    }

    public void WriteHistogram(MetricLabels labels, PerCpuHistogram histogram)
    {
        if (_current is not { } f)
        {
            return;
        }

        if (!f.Delta)
        {
            f.Histograms.Add((labels, histogram.Snapshot(), 0));
        }
        else if (Deltas!.Histogram(histogram) is { } d)
        {
            f.Histograms.Add((labels, d.Snapshot, d.Start));
        }
    }

    public void AddInvalid(long count)
    {
    }
}

/// <summary>
/// What the exporter remembers for delta temporality of the registry's families. A counter's delta is its total minus
/// the total last delivered (so an export that fails changes nothing: the next delta covers both intervals); a
/// histogram's delta is read with <see cref="PerCpuHistogram.CollectDelta"/> (exact, with its own min and max), and one
/// that was not delivered is merged into the next, never dropped. A series with no change since its last delivered
/// point sends none, as the OpenTelemetry SDK does for delta. Used by one export at a time (the exporter's gate).
/// </summary>
internal sealed class FamilyDeltas(ulong processStartUnixNano)
{
    private readonly Dictionary<(string Family, string Series), (double Double, long Long, ulong At)> _delivered = [];
    private readonly Dictionary<(string Family, string Series), (double Double, long Long)> _offered = [];
    private readonly Dictionary<PerCpuHistogram, (HistogramSnapshot Snapshot, ulong Start)> _pending = new(ReferenceEqualityComparer.Instance);
    private readonly List<(PerCpuHistogram Histogram, HistogramSnapshot Snapshot, ulong Start)> _offeredHistograms = [];
    private ulong _lastDelivered = processStartUnixNano;
    private ulong _lastCollect = processStartUnixNano;
    private ulong _now;

    /// <summary>Starts a collection at <paramref name="now"/>.</summary>
    public void Begin(ulong now)
    {
        _now = now;
        _offered.Clear();
        _offeredHistograms.Clear();
    }

    public (double Double, long Long, ulong Start)? Sum(MetricDescriptor family, MetricLabels labels, double total, long longTotal, bool isDouble)
    {
        (string, string) key = (family.Name, SeriesKey(labels));
        _offered[key] = (total, longTotal);
        bool known = _delivered.TryGetValue(key, out (double Double, long Long, ulong At) last);
        double d = total - (known ? last.Double : 0);
        long l = longTotal - (known ? last.Long : 0);
        if (known && (isDouble ? d == 0 : l == 0))
        {
            return null; // no change since the last delivered point
        }

        // A total below the delivered one (the series started again): its whole total is the change.
        return (isDouble && d < 0 ? total : d, !isDouble && l < 0 ? longTotal : l, known ? last.At : _lastDelivered);
    }

    public (HistogramSnapshot Snapshot, ulong Start)? Histogram(PerCpuHistogram histogram)
    {
        HistogramSnapshot change = histogram.CollectDelta();
        ulong start = _lastCollect;
        bool pending = _pending.Remove(histogram, out (HistogramSnapshot Snapshot, ulong Start) unsent);
        if (pending)
        {
            change = unsent.Snapshot.Merge(change);
            start = unsent.Start;
        }

        if (change.Count == 0 && change.Invalid == 0)
        {
            return null;
        }

        _offeredHistograms.Add((histogram, change, start));
        return (change, start);
    }

    /// <summary>After the export: <paramref name="delivered"/> whether the families reached the collector.</summary>
    public void Settle(bool delivered, bool final)
    {
        _lastCollect = _now;
        if (delivered)
        {
            foreach (((string, string) key, (double d, long l)) in _offered)
            {
                _delivered[key] = (d, l, _now);
            }

            _lastDelivered = _now;
            return;
        }

        if (!final)
        {
            foreach ((PerCpuHistogram h, HistogramSnapshot s, ulong start) in _offeredHistograms)
            {
                _pending[h] = (s, start); // merged into the next export, not dropped
            }
        }
    }

    private static string SeriesKey(MetricLabels labels)
    {
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < labels.Count; i++)
        {
            sb.Append(labels.Names[i]).Append('\u0001').Append(labels.Values[i]).Append('\u0002');
        }

        return sb.ToString();
    }
}
