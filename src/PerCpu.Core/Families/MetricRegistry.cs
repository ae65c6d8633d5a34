namespace PerCpu.Families;

/// <summary>
/// The metric families of an application and the other producers (the Meter API listener, the HTTP metrics) whose
/// points every writer walks: <c>/metrics</c> and the OTLP exporter write <see cref="Collect"/>'s output and nothing
/// else. Thread-safe: families are created and collected from any thread; a collect while writers run reads each
/// family as <see cref="MetricFamily"/> says (exact at quiescence, never an atomic snapshot of everything).
/// </summary>
/// <remarks>
/// Registering a family twice with the same definition returns the existing family, so two components can share one
/// family by name. A registration that conflicts (same name, another type, unit, description, label names or
/// buckets) throws, naming both definitions.
/// </remarks>
public sealed class MetricRegistry : IMetricsProducer
{
    /// <summary>OpenTelemetry's default explicit bucket boundaries, less the 0 boundary (zeros are counted exactly anyway).</summary>
    public static readonly IReadOnlyList<double> DefaultBoundaries = [5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000];

    private readonly Lock _lock = new();
    private readonly Dictionary<string, MetricFamily> _byName = new(StringComparer.Ordinal);
    private readonly List<IMetricsProducer> _producers = [];

    /// <summary>Creates a registry.</summary>
    /// <param name="maxSeriesPerFamily">The cap on each family's children. Default 2000, OpenTelemetry's cardinality limit.</param>
    /// <param name="maxLabelValueLength">The longest label value a child is created with (default 1024, at least 16); a
    /// longer one is cut, its last character <c>…</c>.</param>
    public MetricRegistry(int maxSeriesPerFamily = 2000, int maxLabelValueLength = TagValues.DefaultMaxLength)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSeriesPerFamily, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLabelValueLength, 16);
        MaxSeriesPerFamily = maxSeriesPerFamily;
        MaxLabelValueLength = maxLabelValueLength;
    }

    /// <summary>The longest label value a family's child is created with.</summary>
    public int MaxLabelValueLength { get; }

    /// <summary>PerCpu's own family, written once a label value was cut: <c>percpu_label_values_truncated_total</c>.</summary>
    private static readonly MetricDescriptor s_truncated = new("percpu.label_values_truncated", MetricType.Counter, null, "Series created with a label value cut at the maximum label value length (the value ends in '\u2026').");

    /// <summary>PerCpu's own family, written once a label set was exposed renamed: <c>percpu_labels_renamed_total</c>.</summary>
    private static readonly MetricDescriptor s_renamed = new("percpu.labels_renamed", MetricType.Counter, null, "Meter API series whose tag keys the Prometheus formats expose renamed (joined into one label, or a histogram's le as _le).");

    private long _cut;

    /// <summary>Counts one series created with a cut label value (the registry's families, and PerCpu.AspNetCore's request tags).</summary>
    internal void CountCut() => Interlocked.Increment(ref _cut);

    /// <summary>The cap on each family's children.</summary>
    public int MaxSeriesPerFamily { get; }

    /// <summary>Creates (or returns the identical existing) counter family.</summary>
    /// <param name="name">Instrument-style name, e.g. <c>shop.orders</c> (exposed as <c>shop_orders_total</c>).</param>
    /// <param name="unit">UCUM unit, e.g. <c>{order}</c>, or null.</param>
    /// <param name="description">Description, or null.</param>
    /// <param name="labelNames">Label names.</param>
    /// <returns>The family.</returns>
    public CounterFamily CreateCounter(string name, string? unit = null, string? description = null, params string[] labelNames) =>
        GetOrAdd(new CounterFamily(new MetricDescriptor(name, MetricType.Counter, unit, description, labelNames), MaxSeriesPerFamily) { MaxLabelValueLength = MaxLabelValueLength, OnCut = CountCut });

    /// <summary>Creates (or returns the identical existing) up-down counter family.</summary>
    /// <param name="name">Instrument-style name.</param>
    /// <param name="unit">UCUM unit, or null.</param>
    /// <param name="description">Description, or null.</param>
    /// <param name="labelNames">Label names.</param>
    /// <returns>The family.</returns>
    public UpDownCounterFamily CreateUpDownCounter(string name, string? unit = null, string? description = null, params string[] labelNames) =>
        GetOrAdd(new UpDownCounterFamily(new MetricDescriptor(name, MetricType.UpDownCounter, unit, description, labelNames), MaxSeriesPerFamily) { MaxLabelValueLength = MaxLabelValueLength, OnCut = CountCut });

    /// <summary>Creates (or returns the identical existing) gauge family.</summary>
    /// <param name="name">Instrument-style name.</param>
    /// <param name="unit">UCUM unit, or null.</param>
    /// <param name="description">Description, or null.</param>
    /// <param name="labelNames">Label names.</param>
    /// <returns>The family.</returns>
    public GaugeFamily CreateGauge(string name, string? unit = null, string? description = null, params string[] labelNames) =>
        GetOrAdd(new GaugeFamily(new MetricDescriptor(name, MetricType.Gauge, unit, description, labelNames), MaxSeriesPerFamily) { MaxLabelValueLength = MaxLabelValueLength, OnCut = CountCut });

    /// <summary>Creates (or returns the identical existing) histogram family.</summary>
    /// <param name="name">Instrument-style name, e.g. <c>shop.checkout.duration</c> (with unit <c>s</c>: <c>shop_checkout_duration_seconds</c>).</param>
    /// <param name="unit">UCUM unit, or null.</param>
    /// <param name="description">Description, or null.</param>
    /// <param name="boundaries">Classic bucket boundaries; null: ASP.NET Core's duration boundaries for unit <c>s</c>, else <see cref="DefaultBoundaries"/>.</param>
    /// <param name="labelNames">Label names.</param>
    /// <returns>The family.</returns>
    public HistogramFamily CreateHistogram(string name, string? unit = null, string? description = null, IReadOnlyList<double>? boundaries = null, params string[] labelNames) =>
        GetOrAdd(new HistogramFamily(new MetricDescriptor(name, MetricType.Histogram, unit, description, labelNames), MaxSeriesPerFamily, LayoutFor(unit, boundaries)) { MaxLabelValueLength = MaxLabelValueLength, OnCut = CountCut });

    /// <summary>Adds a producer whose families are written after the registry's own, in the order added.</summary>
    /// <param name="producer">The producer.</param>
    public void AddProducer(IMetricsProducer producer)
    {
        ArgumentNullException.ThrowIfNull(producer);
        lock (_lock)
        {
            _producers.Add(producer);
        }
    }

    /// <summary>The families created so far, in creation order.</summary>
    public IReadOnlyList<MetricFamily> Families
    {
        get
        {
            lock (_lock)
            {
                return [.. _byName.Values];
            }
        }
    }

    /// <summary>Writes every family, then every producer's families.</summary>
    /// <param name="writer">The writer.</param>
    public void Collect(IMetricsWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        MetricFamily[] families;
        IMetricsProducer[] producers;
        lock (_lock)
        {
            families = [.. _byName.Values];
            producers = [.. _producers];
        }

        foreach (MetricFamily family in families)
        {
            family.Collect(writer);
        }

        foreach (IMetricsProducer producer in producers)
        {
            producer.Collect(writer);
        }

        long cut = Volatile.Read(ref _cut) + producers.OfType<PerCpuMeterListener>().Sum(l => l.TruncatedLabelValues);
        if (cut > 0)
        {
            writer.BeginFamily(s_truncated);
            writer.WritePoint(MetricLabels.Empty, cut);
        }

        long renamed = producers.OfType<PerCpuMeterListener>().Sum(l => l.RenamedLabelSets);
        if (renamed > 0)
        {
            writer.BeginFamily(s_renamed);
            writer.WritePoint(MetricLabels.Empty, renamed);
        }
    }

    /// <summary>
    /// The layout a histogram gets: exact classic buckets at <paramref name="boundaries"/>, base-2 exponential buckets at
    /// scale 3 (4.3% quantile error) over a range that covers the boundaries with room to spare (2^-20 to 2^40 at least);
    /// a lower scale when the boundaries span so many powers of two that a shard would pass 1024 buckets.
    /// </summary>
    /// <param name="unit">The unit (<c>s</c> selects ASP.NET Core's duration boundaries by default).</param>
    /// <param name="boundaries">Explicit boundaries, or null. Boundaries at or below zero are left out.</param>
    /// <returns>The layout.</returns>
    public static HistogramLayout LayoutFor(string? unit, IReadOnlyList<double>? boundaries)
    {
        if (boundaries is null && unit == "s")
        {
            return HistogramLayout.Default;
        }

        double[] b = [.. (boundaries ?? DefaultBoundaries).Where(x => x > 0 && double.IsFinite(x))];
        int min = -20, max = 40;
        if (b.Length > 0)
        {
            min = Math.Min(min, Math.ILogB(b[0]) - 1);
            max = Math.Max(max, Math.ILogB(b[^1]) + 2);
        }

        // Scale 3 (4.3% quantile error) unless the range is so wide that a shard would pass 1024 buckets (8 KB).
        int scale = 3;
        while (scale > 0 && ((long)(max - min) << scale) > 1024)
        {
            scale--;
        }

        return new HistogramLayout(scale, min, max, b);
    }

    private T GetOrAdd<T>(T family)
        where T : MetricFamily
    {
        lock (_lock)
        {
            if (_byName.TryGetValue(family.Descriptor.Name, out MetricFamily? existing))
            {
                if (existing.SameDefinition(family))
                {
                    return (T)existing;
                }

                throw new InvalidOperationException(
                    $"Metric '{family.Descriptor.Name}' is already registered as {existing.Descriptor}; the new registration asks for {family.Descriptor}. Use one definition, or another name.");
            }

            _byName.Add(family.Descriptor.Name, family);
            return family;
        }
    }
}
