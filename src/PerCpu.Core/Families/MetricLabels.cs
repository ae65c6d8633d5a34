namespace PerCpu.Families;

/// <summary>
/// The label set of one series: names (attribute keys, as given) and their values as strings. Immutable; created once per
/// series, never per write. Writers cache their rendering of it (the Prometheus label text) on the instance.
/// </summary>
public sealed class MetricLabels
{
    private readonly string[] _names;
    private readonly string[] _values;

    /// <summary>Creates a label set.</summary>
    /// <param name="names">Label names.</param>
    /// <param name="values">Values, one per name.</param>
    public MetricLabels(IReadOnlyList<string> names, IReadOnlyList<string> values)
    {
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(values);
        if (names.Count != values.Count)
        {
            throw new ArgumentException($"{names.Count} label names but {values.Count} values.", nameof(values));
        }

        _names = [.. names];
        _values = [.. values];
    }

    /// <summary>No labels.</summary>
    public static MetricLabels Empty { get; } = new([], []);

    /// <summary>The overflow series of a capped family: <c>otel.metric.overflow="true"</c>, as OpenTelemetry names it.</summary>
    public static MetricLabels Overflow { get; } = new(["otel.metric.overflow"], ["true"]);

    /// <summary>Label names.</summary>
    public IReadOnlyList<string> Names => _names;

    /// <summary>Label values.</summary>
    public IReadOnlyList<string> Values => _values;

    /// <summary>How many labels.</summary>
    public int Count => _names.Length;

    /// <summary>The Prometheus rendering (<c>a="x",b="y"</c>) in UTF-8, computed by the first writer that needs it.</summary>
    internal byte[]? PrometheusUtf8 { get; set; }
}
