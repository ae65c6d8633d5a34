using System.Buffers;
using System.Globalization;
using System.Text;
using PerCpu.Families;

namespace PerCpu.Formats;

/// <summary>
/// Writes the Prometheus text format 0.0.4 or OpenMetrics 1.0.0 from any <see cref="IMetricsProducer"/>: it knows
/// families, labels and points, nothing of where they come from. Names follow <see cref="PrometheusNaming"/>; label
/// values and help text are escaped; numbers are culture-invariant and round-trip. A family whose Prometheus name was
/// already written in this scrape (two instruments that sanitize to one name) is left out and counted in
/// <c>percpu_metric_name_conflicts_total</c>, so the output stays valid. Call <see cref="Finish"/> once at the end.
/// </summary>
/// <remarks>
/// Histograms are read with <see cref="PerCpuHistogram.ReadExplicitBuckets"/> into a buffer reused across series, so a
/// scrape allocates per family and per layout, not per series (beyond the label text, built once per series and kept).
/// </remarks>
public sealed class PrometheusTextWriter : IMetricsWriter
{
    /// <summary>The content type of the 0.0.4 text format.</summary>
    public const string TextContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>The content type of OpenMetrics 1.0.0.</summary>
    public const string OpenMetricsContentType = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    private readonly StringBuilder _w;
    private readonly bool _openMetrics;
    private readonly HashSet<string> _written = new(StringComparer.Ordinal);
    private readonly Dictionary<HistogramLayout, string[]> _le = [];
    private PrometheusNames? _family;
    private MetricDescriptor? _descriptor;
    private long[] _cumulative = new long[16];
    private long _invalid;
    private long _conflicts;

    /// <summary>Creates a writer that appends to <paramref name="output"/>.</summary>
    /// <param name="output">The text.</param>
    /// <param name="openMetrics">OpenMetrics 1.0.0 (true) or the 0.0.4 text format.</param>
    public PrometheusTextWriter(StringBuilder output, bool openMetrics)
    {
        ArgumentNullException.ThrowIfNull(output);
        _w = output;
        _openMetrics = openMetrics;
    }

    /// <summary>Invalid values seen so far (histograms' invalid counts plus what producers reported).</summary>
    public long InvalidValues => _invalid;

    /// <summary>Families left out because their Prometheus name was already written.</summary>
    public long NameConflicts => _conflicts;

    /// <inheritdoc/>
    public void BeginFamily(MetricDescriptor descriptor)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        PrometheusNames names = PrometheusNaming.For(descriptor);
        if (!_written.Add(names.Name) || (names.Type == "histogram" && !ReserveHistogramNames(names.Name)))
        {
            _family = null;
            _descriptor = null;
            _conflicts++;
            return;
        }

        _family = names;
        _descriptor = descriptor;
        // Without a description, the instrument's own name is the most useful help text (and promtool wants one).
        Header(names.TextFamilyName, names.Name, names.Type, descriptor.Description ?? descriptor.Name, names.Unit);
    }

    /// <inheritdoc/>
    public void WritePoint(MetricLabels labels, double value)
    {
        if (_family is null)
        {
            return;
        }

        _w.Append(_family.SampleName);
        AppendLabels(labels, null);
        _w.Append(' ').Append(FormatNumber(value)).Append('\n');
    }

    /// <inheritdoc/>
    public void WritePoint(MetricLabels labels, long value)
    {
        if (_family is null)
        {
            return;
        }

        _w.Append(_family.SampleName);
        AppendLabels(labels, null);
        _w.Append(' ').Append(value.ToString(CultureInfo.InvariantCulture)).Append('\n');
    }

    /// <inheritdoc/>
    public void WriteHistogram(MetricLabels labels, PerCpuHistogram histogram)
    {
        ArgumentNullException.ThrowIfNull(histogram);
        if (_family is null)
        {
            return;
        }

        HistogramLayout layout = histogram.Layout;
        if (!_le.TryGetValue(layout, out string[]? le))
        {
            le = [.. layout.ExplicitBoundaries.Select(FormatNumber)];
            _le[layout] = le;
        }

        if (_cumulative.Length < le.Length)
        {
            _cumulative = new long[le.Length];
        }

        long count = histogram.ReadExplicitBuckets(_cumulative, out double sum, out long invalid);
        _invalid += invalid;
        string name = _family.Name;
        for (int i = 0; i < le.Length; i++)
        {
            _w.Append(name).Append("_bucket");
            AppendLabels(labels, le[i]);
            _w.Append(' ').Append(_cumulative[i].ToString(CultureInfo.InvariantCulture)).Append('\n');
        }

        _w.Append(name).Append("_bucket");
        AppendLabels(labels, "+Inf");
        _w.Append(' ').Append(count.ToString(CultureInfo.InvariantCulture)).Append('\n');
        _w.Append(name).Append("_sum");
        AppendLabels(labels, null);
        _w.Append(' ').Append(FormatNumber(sum)).Append('\n');
        _w.Append(name).Append("_count");
        AppendLabels(labels, null);
        _w.Append(' ').Append(count.ToString(CultureInfo.InvariantCulture)).Append('\n');
    }

    /// <inheritdoc/>
    public void AddInvalid(long count) => _invalid += count;

    /// <summary>Writes PerCpu's own totals of this scrape (invalid values, name conflicts) and, for OpenMetrics, <c># EOF</c>.</summary>
    public void Finish()
    {
        Counter("percpu_invalid_values", "Invalid values (NaN, infinite, negative durations, negative counter adds) counted and left out of the metrics.", _invalid);
        Counter("percpu_metric_name_conflicts", "Families left out of this scrape because another family already has their Prometheus name.", _conflicts);
        if (_openMetrics)
        {
            _w.Append("# EOF\n");
        }
    }

    /// <summary>A number as Prometheus writes it: <c>+Inf</c>, <c>-Inf</c>, <c>NaN</c>, or the shortest round-trip form.</summary>
    /// <param name="value">The value.</param>
    /// <returns>The text.</returns>
    public static string FormatNumber(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf" : double.IsNegativeInfinity(value) ? "-Inf" : double.IsNaN(value) ? "NaN" : value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>A label value escaped for both formats (backslash, double quote, line feed).</summary>
    /// <param name="value">The value.</param>
    /// <returns>The escaped value.</returns>
    public static string EscapeLabelValue(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        return value.AsSpan().IndexOfAny(s_escaped) < 0
            ? value
            : value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
    }

    private static readonly SearchValues<char> s_escaped = SearchValues.Create("\\\"\n");

    private bool ReserveHistogramNames(string name) =>
        _written.Add(name + "_bucket") & _written.Add(name + "_count") & _written.Add(name + "_sum");

    private void AppendLabels(MetricLabels labels, string? le)
    {
        string text = labels.PrometheusText ??= RenderLabels(labels);
        if (text.Length == 0 && le is null)
        {
            return;
        }

        _w.Append('{').Append(text);
        if (le is not null)
        {
            _w.Append(text.Length > 0 ? ",le=\"" : "le=\"").Append(le).Append('"');
        }

        _w.Append('}');
    }

    /// <summary>
    /// <c>a="x",b="y"</c>: names sanitized; when two keys sanitize to one name, their values are joined with <c>;</c> in
    /// the order of the original keys (OpenTelemetry's rule).
    /// </summary>
    private static string RenderLabels(MetricLabels labels)
    {
        if (labels.Count == 0)
        {
            return "";
        }

        var merged = new List<(string Name, List<(string Key, string Value)> Parts)>(labels.Count);
        for (int i = 0; i < labels.Count; i++)
        {
            string name = PrometheusNaming.SanitizeLabel(labels.Names[i]);
            int at = merged.FindIndex(m => m.Name == name);
            if (at < 0)
            {
                merged.Add((name, [(labels.Names[i], labels.Values[i])]));
            }
            else
            {
                merged[at].Parts.Add((labels.Names[i], labels.Values[i]));
            }
        }

        var b = new StringBuilder(16 * labels.Count);
        foreach ((string name, List<(string Key, string Value)> parts) in merged)
        {
            string value = parts.Count == 1 ? parts[0].Value : string.Join(';', parts.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => p.Value));
            b.Append(b.Length > 0 ? "," : "").Append(name).Append("=\"").Append(EscapeLabelValue(value)).Append('"');
        }

        return b.ToString();
    }

    private void Header(string textFamilyName, string name, string type, string? help, string? unit)
    {
        string family = _openMetrics ? name : textFamilyName;
        if (help is not null)
        {
            _w.Append("# HELP ").Append(family).Append(' ').Append(EscapeHelp(help)).Append('\n');
        }

        _w.Append("# TYPE ").Append(family).Append(' ').Append(type).Append('\n');
        if (_openMetrics && unit is not null)
        {
            _w.Append("# UNIT ").Append(family).Append(' ').Append(unit).Append('\n');
        }
    }

    private void Counter(string name, string help, long value)
    {
        if (!_written.Add(name))
        {
            return;
        }

        Header(name + "_total", name, "counter", help, null);
        _w.Append(name).Append("_total ").Append(value.ToString(CultureInfo.InvariantCulture)).Append('\n');
    }

    private static string EscapeHelp(string value) =>
        value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
}
