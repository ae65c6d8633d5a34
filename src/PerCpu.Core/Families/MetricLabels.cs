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
        : this(names, values, null)
    {
    }

    /// <summary>Creates a label set that also keeps the values' original types (for formats with typed attributes, such as OTLP).</summary>
    /// <param name="names">Label names.</param>
    /// <param name="values">Values as strings, one per name (the Prometheus formats).</param>
    /// <param name="rawValues">The same values as given (a status code as an <see cref="int"/>, a flag as a <see cref="bool"/>), or null.</param>
    public MetricLabels(IReadOnlyList<string> names, IReadOnlyList<string> values, IReadOnlyList<object>? rawValues)
    {
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(values);
        if (names.Count != values.Count || (rawValues is not null && rawValues.Count != values.Count))
        {
            throw new ArgumentException($"{names.Count} label names but {values.Count} values ({rawValues?.Count} raw).", nameof(values));
        }

        _names = [.. names];
        _values = [.. values];
        RawValues = rawValues is null ? _values : [.. rawValues];
    }

    /// <summary>No labels.</summary>
    public static MetricLabels Empty { get; } = new([], []);

    /// <summary>The overflow series of a capped family: <c>otel.metric.overflow="true"</c>, as OpenTelemetry names it.</summary>
    public static MetricLabels Overflow { get; } = new(["otel.metric.overflow"], ["true"], [true]);

    /// <summary>Label names.</summary>
    public IReadOnlyList<string> Names => _names;

    /// <summary>Label values.</summary>
    public IReadOnlyList<string> Values => _values;

    /// <summary>The values with their original types where known (else the strings of <see cref="Values"/>).</summary>
    public IReadOnlyList<object> RawValues { get; }

    /// <summary>How many labels.</summary>
    public int Count => _names.Length;

    /// <summary>The Prometheus rendering (<c>a="x",b="y"</c>) in UTF-8, computed by the first writer that needs it.</summary>
    internal byte[]? PrometheusUtf8 { get; set; }

    /// <summary>The same, for a histogram's series (where <c>le</c> is reserved).</summary>
    internal byte[]? PrometheusHistogramUtf8 { get; set; }

    /// <summary>The exposed label pairs (<see cref="Formats.PrometheusNaming.ExposedLabels"/>), computed once.</summary>
    internal KeyValuePair<string, string>[]? Exposed;

    /// <summary>The exposed label pairs of a histogram's series.</summary>
    internal KeyValuePair<string, string>[]? ExposedHistogram;
}
