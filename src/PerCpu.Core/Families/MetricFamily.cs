using System.Collections.Concurrent;

namespace PerCpu.Families;

/// <summary>
/// A labelled metric family: one child instrument per combination of label values, created on first request and kept
/// for the life of the family. Get a child once (<c>family.WithLabels("eu")</c>) and keep it: writing to it costs what
/// writing to the bare instrument costs. The number of children is capped (<see cref="MaxSeries"/>); requests for
/// further combinations get the overflow child, labelled <c>otel.metric.overflow="true"</c>, so no write is lost and
/// memory stays bounded.
/// </summary>
/// <remarks>
/// <b>Reads while writers run</b> (<see cref="Collect"/>): each child is read as its instrument reads
/// (<see cref="PerCpuCounter.Sum"/>, <see cref="PerCpuHistogram.Snapshot"/>, ...): not one atomic snapshot of the family,
/// exact at quiescence, and a monotonic counter never reads lower than before. A child created during a collect may
/// or may not be in it.
/// </remarks>
public abstract class MetricFamily : IMetricsProducer
{
    private protected MetricFamily(MetricDescriptor descriptor, int maxSeries)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSeries, 1);
        Descriptor = descriptor;
        MaxSeries = maxSeries;
    }

    /// <summary>What the family is.</summary>
    public MetricDescriptor Descriptor { get; }

    /// <summary>The most children (label combinations) the family creates; beyond it, the overflow child.</summary>
    public int MaxSeries { get; }

    /// <summary>The longest label value a child is created with; longer values are cut (the last character <c>…</c>).</summary>
    internal int MaxLabelValueLength { get; init; } = TagValues.DefaultMaxLength;

    /// <summary>Told when a child is created with a cut value (the registry counts it).</summary>
    internal Action? OnCut { get; init; }

    /// <summary>How many times a label combination beyond the cap was asked for (and got the overflow child).</summary>
    public abstract long OverflowRequests { get; }

    /// <summary>How many children exist, the overflow child excluded.</summary>
    public abstract int SeriesCount { get; }

    /// <inheritdoc/>
    public abstract void Collect(IMetricsWriter writer);

    /// <summary>Whether this family was created from the same definition (used to tell duplicates from conflicts).</summary>
    internal virtual bool SameDefinition(MetricFamily other) => other.GetType() == GetType() && other.Descriptor.Equals(Descriptor);
}

/// <summary>A labelled family whose children are <typeparamref name="TChild"/> instruments.</summary>
/// <typeparam name="TChild">The child instrument.</typeparam>
public abstract class MetricFamily<TChild> : MetricFamily
    where TChild : class
{
    private readonly ConcurrentDictionary<LabelKey, (MetricLabels Labels, TChild Child)> _children = new();
    private readonly AppendOnlyList<(MetricLabels Labels, TChild Child)> _ordered = new();
    private readonly Lock _lock = new();
    private TChild? _overflow;
    private long _overflowRequests;

    private protected MetricFamily(MetricDescriptor descriptor, int maxSeries)
        : base(descriptor, maxSeries)
    {
    }

    /// <inheritdoc/>
    public override long OverflowRequests => Volatile.Read(ref _overflowRequests);

    /// <inheritdoc/>
    public override int SeriesCount => _children.Count;

    /// <summary>
    /// The child for these label values, one per label name, in the order of <see cref="MetricDescriptor.LabelNames"/>.
    /// Lock-free when the child exists; call it once and keep the child on hot paths.
    /// </summary>
    /// <param name="labelValues">The values; not null.</param>
    /// <returns>The child, or the overflow child when the family is at <see cref="MetricFamily.MaxSeries"/>.</returns>
    /// <exception cref="ArgumentException">The number of values differs from the number of label names, or a value is null.</exception>
    public TChild WithLabels(params string[] labelValues)
    {
        ArgumentNullException.ThrowIfNull(labelValues);
        if (labelValues.Length != Descriptor.LabelNames.Count)
        {
            throw new ArgumentException($"Metric '{Descriptor.Name}' has {Descriptor.LabelNames.Count} labels ({string.Join(", ", Descriptor.LabelNames)}); {labelValues.Length} values were given.", nameof(labelValues));
        }

        foreach (string? value in labelValues)
        {
            if (value is null)
            {
                throw new ArgumentException($"Metric '{Descriptor.Name}': a label value is null.", nameof(labelValues));
            }
        }

        bool cut = false;
        if (AnyLongerThan(labelValues, MaxLabelValueLength))
        {
            // Cut as the Meter API listener cuts (the last character the mark): two values that differ only beyond the
            // cap are one child, never two children that print the same labels.
            labelValues = [.. labelValues.Select(v => TagValues.Render(v, MaxLabelValueLength))];
            cut = true;
        }

        var key = new LabelKey(labelValues);
        if (_children.TryGetValue(key, out (MetricLabels Labels, TChild Child) found))
        {
            return found.Child;
        }

        lock (_lock)
        {
            if (_children.TryGetValue(key, out found))
            {
                return found.Child;
            }

            if (_children.Count >= MaxSeries)
            {
                Interlocked.Increment(ref _overflowRequests);
                if (_overflow is null)
                {
                    Volatile.Write(ref _overflow, CreateChild());
                }

                return _overflow!;
            }

            if (cut)
            {
                OnCut?.Invoke(); // once per child, when it is created
            }

            var entry = (new MetricLabels(Descriptor.LabelNames, [.. labelValues]), CreateChild());
            _ordered.Add(entry);
            _children[new LabelKey([.. labelValues])] = entry;
            return entry.Item2;
        }
    }

    /// <inheritdoc/>
    public override void Collect(IMetricsWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);

        // In place, without the lock: every child created before the walk started is in it, and nothing is copied.
        TChild? overflow = Volatile.Read(ref _overflow);
        writer.BeginFamily(Descriptor);
        foreach ((MetricLabels labels, TChild child) in _ordered.Items)
        {
            Write(writer, labels, child);
        }

        if (overflow is not null)
        {
            Write(writer, MetricLabels.Overflow, overflow);
        }
    }

    private static bool AnyLongerThan(string[] values, int max)
    {
        foreach (string v in values)
        {
            if (v.Length > max)
            {
                return true;
            }
        }

        return false; // a loop, not Any(lambda): the lambda would capture and allocate on every call
    }

    private protected abstract TChild CreateChild();

    private protected abstract void Write(IMetricsWriter writer, MetricLabels labels, TChild child);

    private readonly struct LabelKey(string[] values) : IEquatable<LabelKey>
    {
        private readonly string[] _values = values;

        public bool Equals(LabelKey other) => _values.AsSpan().SequenceEqual(other._values);

        public override bool Equals(object? obj) => obj is LabelKey k && Equals(k);

        public override int GetHashCode()
        {
            var h = new HashCode();
            foreach (string v in _values)
            {
                h.Add(v);
            }

            return h.ToHashCode();
        }
    }
}

/// <summary>A family of <see cref="PerCpuCounter"/> children (a monotonic count).</summary>
public sealed class CounterFamily : MetricFamily<PerCpuCounter>
{
    internal CounterFamily(MetricDescriptor descriptor, int maxSeries)
        : base(descriptor, maxSeries)
    {
    }

    private protected override PerCpuCounter CreateChild() => new();

    private protected override void Write(IMetricsWriter writer, MetricLabels labels, PerCpuCounter child) => writer.WritePoint(labels, child.Sum());
}

/// <summary>A family of <see cref="PerCpuUpDownCounter"/> children (a sum that goes up and down).</summary>
public sealed class UpDownCounterFamily : MetricFamily<PerCpuUpDownCounter>
{
    internal UpDownCounterFamily(MetricDescriptor descriptor, int maxSeries)
        : base(descriptor, maxSeries)
    {
    }

    private protected override PerCpuUpDownCounter CreateChild() => new();

    private protected override void Write(IMetricsWriter writer, MetricLabels labels, PerCpuUpDownCounter child) => writer.WritePoint(labels, child.Sum());
}

/// <summary>A family of <see cref="MetricGauge"/> children (last values).</summary>
public sealed class GaugeFamily : MetricFamily<MetricGauge>
{
    internal GaugeFamily(MetricDescriptor descriptor, int maxSeries)
        : base(descriptor, maxSeries)
    {
    }

    private protected override MetricGauge CreateChild() => new();

    private protected override void Write(IMetricsWriter writer, MetricLabels labels, MetricGauge child) => writer.WritePoint(labels, child.Value);
}

/// <summary>A family of <see cref="PerCpuHistogram"/> children sharing one <see cref="HistogramLayout"/>.</summary>
public sealed class HistogramFamily : MetricFamily<PerCpuHistogram>
{
    internal HistogramFamily(MetricDescriptor descriptor, int maxSeries, HistogramLayout layout)
        : base(descriptor, maxSeries) => Layout = layout;

    /// <summary>The layout of every child.</summary>
    public HistogramLayout Layout { get; }

    internal override bool SameDefinition(MetricFamily other) => base.SameDefinition(other) && ((HistogramFamily)other).Layout.Equals(Layout);

    private protected override PerCpuHistogram CreateChild() => new(Layout);

    private protected override void Write(IMetricsWriter writer, MetricLabels labels, PerCpuHistogram child) => writer.WriteHistogram(labels, child);
}
