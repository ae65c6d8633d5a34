using System.Buffers;
using System.Buffers.Text;
using System.Globalization;
using System.Text;
using PerCpu.Families;

namespace PerCpu.Formats;

/// <summary>
/// Writes the Prometheus text format 0.0.4 or OpenMetrics 1.0.0 as UTF-8 into an <see cref="IBufferWriter{T}"/> (a
/// response's <c>PipeWriter</c>, pooled chunks) from any <see cref="IMetricsProducer"/>: it knows families, labels and
/// points, nothing of where they come from. Names follow <see cref="PrometheusNaming"/>; label values and help text are
/// escaped; numbers are culture-invariant and round-trip. A family whose Prometheus name was already written in this
/// scrape (two instruments that sanitize to one name) is left out and counted in
/// <c>percpu_metric_name_conflicts_total</c>, so the output stays valid. Call <see cref="Finish"/> once at the end.
/// </summary>
/// <remarks>
/// Label sets are encoded once per series and kept (on <see cref="MetricLabels"/>); family names and the <c>le</c>
/// suffixes once per family and layout. Histograms are read with <see cref="PerCpuHistogram.ReadExplicitBuckets"/>
/// into a reused buffer. So a scrape allocates per family and per layout, not per series, besides the output.
/// In OpenMetrics, a histogram's <c>_bucket</c> lines carry the bucket's latest exemplar
/// (<see cref="PerCpuHistogram.ReadExemplars"/>): <c># {trace_id="…",span_id="…"} value timestamp</c>. The 0.0.4 text
/// format has no exemplars.
/// </remarks>
public sealed class PrometheusTextWriter : IMetricsWriter
{
    /// <summary>The content type of the 0.0.4 text format.</summary>
    public const string TextContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>The content type of OpenMetrics 1.0.0.</summary>
    public const string OpenMetricsContentType = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    private static readonly SearchValues<char> s_escaped = SearchValues.Create("\\\"\n");

    private readonly IBufferWriter<byte> _out;
    private readonly bool _openMetrics;
    private readonly HashSet<string> _written = new(StringComparer.Ordinal);
    private readonly Dictionary<HistogramLayout, byte[][]> _le = [];
    private FamilyBytes? _family;
    private long[] _cumulative = new long[16];
    private HistogramExemplar[] _exemplars = [];
    private long _invalid;
    private long _conflicts;
    private readonly List<MetricDescriptor> _leftOut = [];

    /// <summary>Creates a writer of UTF-8 text into <paramref name="output"/>.</summary>
    /// <param name="output">Where the text goes.</param>
    /// <param name="openMetrics">OpenMetrics 1.0.0 (true) or the 0.0.4 text format.</param>
    public PrometheusTextWriter(IBufferWriter<byte> output, bool openMetrics)
    {
        ArgumentNullException.ThrowIfNull(output);
        _out = output;
        _openMetrics = openMetrics;
    }

    /// <summary>Invalid values seen so far (histograms' invalid counts plus what producers reported).</summary>
    public long InvalidValues => _invalid;

    /// <summary>Families left out because their Prometheus name was already written.</summary>
    public long NameConflicts => _conflicts;

    /// <summary>The families left out of this scrape, in order (for a log line that names them).</summary>
    public IReadOnlyList<MetricDescriptor> LeftOut => _leftOut;

    /// <summary>The whole exposition of <paramref name="producer"/> as a string (tests, diagnostics).</summary>
    /// <param name="producer">The producer.</param>
    /// <param name="openMetrics">OpenMetrics (true) or the 0.0.4 text format.</param>
    /// <returns>The text, <see cref="Finish"/> included.</returns>
    public static string WriteToString(IMetricsProducer producer, bool openMetrics)
    {
        ArgumentNullException.ThrowIfNull(producer);
        var buffer = new ArrayBufferWriter<byte>();
        var writer = new PrometheusTextWriter(buffer, openMetrics);
        producer.Collect(writer);
        writer.Finish();
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <inheritdoc/>
    public void BeginFamily(MetricDescriptor descriptor)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        PrometheusNames names = PrometheusNaming.For(descriptor);
        if (!names.TryReserve(_written))
        {
            _family = null;
            _conflicts++;
            _leftOut.Add(descriptor);
            return;
        }

        _family = names.Bytes ??= new FamilyBytes(names);
        // Without a description, the instrument's own name is the most useful help text (and promtool wants one).
        Header(names.TextFamilyName, names.Name, names.Type, descriptor.Description ?? descriptor.Name, names.Unit);
    }

    /// <inheritdoc/>
    public void WritePoint(MetricLabels labels, double value)
    {
        if (BeginSample(labels))
        {
            Write(value);
            Write("\n"u8);
        }
    }

    /// <inheritdoc/>
    public void WritePoint(MetricLabels labels, long value)
    {
        if (BeginSample(labels))
        {
            Write(value);
            Write("\n"u8);
        }
    }

    /// <summary><c>name{labels} </c> of a counter or gauge sample; false when the family is left out.</summary>
    private bool BeginSample(MetricLabels labels)
    {
        if (_family is null)
        {
            return false;
        }

        Write(_family.Sample);
        Labels(labels, null);
        Write(" "u8);
        return true;
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
        if (!_le.TryGetValue(layout, out byte[][]? le))
        {
            le = [.. layout.ExplicitBoundaries.Select(b => Encoding.UTF8.GetBytes("le=\"" + (_openMetrics ? CanonicalNumber(b) : FormatNumber(b)) + "\"}")), "le=\"+Inf\"}"u8.ToArray()];
            _le[layout] = le;
        }

        int n = le.Length - 1;
        if (_cumulative.Length < n)
        {
            _cumulative = new long[n];
        }

        long count = histogram.ReadExplicitBuckets(_cumulative, out double sum, out long invalid);
        _invalid += invalid;
        bool exemplars = false;
        if (_openMetrics)
        {
            if (_exemplars.Length < n + 1)
            {
                _exemplars = new HistogramExemplar[n + 1];
            }

            exemplars = histogram.ReadExemplars(_exemplars) > 0;
        }

        byte[] labelBytes = LabelBytes(labels, histogram: true);
        byte[] bucket = _family.Bucket;
        for (int i = 0; i <= n; i++)
        {
            // One line, one span: name_bucket{labels,le="x"} count
            Span<byte> line = _out.GetSpan(bucket.Length + labelBytes.Length + le[i].Length + 24 + (exemplars ? ExemplarMaxBytes : 0));
            bucket.CopyTo(line);
            int at = bucket.Length;
            if (labelBytes.Length > 0)
            {
                labelBytes.CopyTo(line[at..]);
                at += labelBytes.Length;
                line[at++] = (byte)',';
            }

            le[i].CopyTo(line[at..]);
            at += le[i].Length;
            line[at++] = (byte)' ';
            Utf8Formatter.TryFormat(i < n ? _cumulative[i] : count, line[at..], out int digits);
            at += digits;
            if (exemplars && _exemplars[i].HasValue)
            {
                at += WriteExemplar(line[at..], _exemplars[i]);
            }

            line[at++] = (byte)'\n';
            _out.Advance(at);
        }

        Write(_family.Sum);
        Labels(labels, labelBytes);
        Write(" "u8);
        Write(sum);
        Write("\n"u8);
        Write(_family.Count);
        Labels(labels, labelBytes);
        Write(" "u8);
        Write(count);
        Write("\n"u8);
    }

    /// <summary>
    /// The longest exemplar suffix: <c> # {trace_id="32 hex",span_id="16 hex"} value seconds.millis</c>. Its label set
    /// (names and values, 63 characters) is well inside OpenMetrics' limit of 128; the values are lowercase hex, so there
    /// is nothing to escape.
    /// </summary>
    internal const int ExemplarMaxBytes = 160;

    /// <summary>The characters of an exemplar's label names and values, which OpenMetrics limits to 128.</summary>
    internal const int ExemplarLabelCharacters = 8 + 32 + 7 + 16;

    /// <summary>Writes <c> # {trace_id="…",span_id="…"} value timestamp</c> (OpenMetrics exemplar) and returns its length.</summary>
    internal static int WriteExemplar(Span<byte> line, in HistogramExemplar exemplar)
    {
        Span<byte> id = stackalloc byte[16];
        int at = 0;
        ReadOnlySpan<byte> open = " # {trace_id=\""u8, middle = "\",span_id=\""u8;
        open.CopyTo(line);
        at += open.Length;
        exemplar.CopyTraceId(id);
        at += Hex(id, line[at..]);
        middle.CopyTo(line[at..]);
        at += middle.Length;
        exemplar.CopySpanId(id);
        at += Hex(id[..8], line[at..]);
        "\"} "u8.CopyTo(line[at..]);
        at += 3;
        exemplar.Value.TryFormat(line[at..], out int written, "R", CultureInfo.InvariantCulture);
        at += written;
        line[at++] = (byte)' ';
        long millis = exemplar.TimestampUnixNanoseconds / 1_000_000;
        Utf8Formatter.TryFormat(millis / 1000, line[at..], out written);
        at += written;
        line[at++] = (byte)'.';
        Utf8Formatter.TryFormat(millis % 1000, line[at..], out written, new StandardFormat('D', 3));
        return at + written;

        static int Hex(ReadOnlySpan<byte> bytes, Span<byte> into)
        {
            for (int i = 0; i < bytes.Length; i++)
            {
                into[2 * i] = (byte)"0123456789abcdef"[bytes[i] >> 4];
                into[(2 * i) + 1] = (byte)"0123456789abcdef"[bytes[i] & 0xF];
            }

            return 2 * bytes.Length;
        }
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
            Write("# EOF\n"u8);
        }
    }

    /// <summary>A number as Prometheus writes it: <c>+Inf</c>, <c>-Inf</c>, <c>NaN</c>, or the shortest round-trip form.</summary>
    /// <param name="value">The value.</param>
    /// <returns>The text.</returns>
    public static string FormatNumber(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf" : double.IsNegativeInfinity(value) ? "-Inf" : double.IsNaN(value) ? "NaN" : value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>
    /// A number as OpenMetrics writes <c>le</c> values: the canonical float, so a whole number keeps a fractional part
    /// (<c>1.0</c>, <c>10.0</c>, as the OpenTelemetry Prometheus exporter writes them and as a query on
    /// <c>le="1.0"</c> expects); other values as <see cref="FormatNumber"/>.
    /// </summary>
    /// <param name="value">The value.</param>
    /// <returns>The text.</returns>
    public static string CanonicalNumber(double value)
    {
        string text = FormatNumber(value);
        return double.IsFinite(value) && text.AsSpan().IndexOfAny('.', 'E', 'e') < 0 ? text + ".0" : text;
    }

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

    private void Labels(MetricLabels labels, byte[]? known)
    {
        byte[] bytes = known ?? LabelBytes(labels, histogram: false);
        if (bytes.Length == 0)
        {
            return;
        }

        Write("{"u8);
        Write(bytes);
        Write("}"u8);
    }

    private static byte[] LabelBytes(MetricLabels labels, bool histogram) => histogram
        ? labels.PrometheusHistogramUtf8 ??= Encoding.UTF8.GetBytes(RenderLabels(labels, histogram: true))
        : labels.PrometheusUtf8 ??= Encoding.UTF8.GetBytes(RenderLabels(labels, histogram: false));

    /// <summary><c>a="x",b="y"</c>: the pairs of <see cref="PrometheusNaming.ExposedLabels"/>, values escaped.</summary>
    private static string RenderLabels(MetricLabels labels, bool histogram)
    {
        var b = new StringBuilder(16 * labels.Count);
        foreach ((string name, string value) in PrometheusNaming.ExposedLabels(labels, histogram))
        {
            b.Append(b.Length > 0 ? "," : "").Append(name).Append("=\"").Append(EscapeLabelValue(value)).Append('"');
        }

        return b.ToString();
    }

    private void Header(string textFamilyName, string name, string type, string? help, string? unit)
    {
        string family = _openMetrics ? name : textFamilyName;
        if (help is not null)
        {
            Write("# HELP " + family + " " + EscapeHelp(help, _openMetrics) + "\n");
        }

        Write("# TYPE " + family + " " + type + "\n");
        if (_openMetrics && unit is not null)
        {
            Write("# UNIT " + family + " " + unit + "\n");
        }
    }

    private void Counter(string name, string help, long value)
    {
        if (_written.Contains(name) || _written.Contains(name + "_total"))
        {
            return;
        }

        _written.Add(name);
        _written.Add(name + "_total");

        Header(name + "_total", name, "counter", help, null);
        Write(name + "_total ");
        Write(value);
        Write("\n"u8);
    }

    /// <summary>Help text escaped: <c>\</c> and newline in both formats, and <c>"</c> too in OpenMetrics, whose spec says so.</summary>
    private static string EscapeHelp(string value, bool openMetrics)
    {
        string escaped = value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
        return openMetrics ? escaped.Replace("\"", "\\\"", StringComparison.Ordinal) : escaped;
    }

    private void Write(ReadOnlySpan<byte> bytes)
    {
        Span<byte> span = _out.GetSpan(bytes.Length);
        bytes.CopyTo(span);
        _out.Advance(bytes.Length);
    }

    private void Write(string text)
    {
        int max = Encoding.UTF8.GetMaxByteCount(text.Length);
        Span<byte> span = _out.GetSpan(max);
        _out.Advance(Encoding.UTF8.GetBytes(text, span));
    }

    private void Write(long value)
    {
        Span<byte> span = _out.GetSpan(20);
        Utf8Formatter.TryFormat(value, span, out int written);
        _out.Advance(written);
    }

    private void Write(double value)
    {
        if (!double.IsFinite(value))
        {
            Write(double.IsNaN(value) ? "NaN"u8 : value > 0 ? "+Inf"u8 : "-Inf"u8);
            return;
        }

        Span<byte> span = _out.GetSpan(32);
        value.TryFormat(span, out int written, "R", CultureInfo.InvariantCulture);
        _out.Advance(written);
    }

    /// <summary>A family's names, encoded once.</summary>
    internal sealed class FamilyBytes(PrometheusNames names)
    {
        public readonly byte[] Sample = Encoding.UTF8.GetBytes(names.SampleName);
        public readonly byte[] Bucket = Encoding.UTF8.GetBytes(names.Name + "_bucket{");
        public readonly byte[] Sum = Encoding.UTF8.GetBytes(names.Name + "_sum");
        public readonly byte[] Count = Encoding.UTF8.GetBytes(names.Name + "_count");
    }
}
