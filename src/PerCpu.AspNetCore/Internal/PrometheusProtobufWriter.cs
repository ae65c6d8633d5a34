using System.Buffers;
using PerCpu.AspNetCore.Otlp;
using PerCpu.Families;
using PerCpu.Formats;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// Writes the Prometheus protobuf exposition (<see cref="ContentType"/>): length-delimited
/// <c>io.prometheus.client.MetricFamily</c> messages, one per family, with the same names as the text formats.
/// Histograms carry both the classic <c>le</c> buckets and the native histogram (schema = the layout's scale, zero
/// threshold 2^MinExponent holding zeros and the underflow bucket, positive spans and bucket deltas), so classic and
/// native queries both work. Field numbers are those of Prometheus's <c>io/prometheus/client/metrics.proto</c>
/// (prometheus/client_model), written by hand with the OTLP encoder's protobuf writer. Each classic bucket carries its
/// latest exemplar (Bucket.exemplar), with the trace and span ids as in OpenMetrics. Series are streamed into one
/// reused, pooled family buffer (lengths patched in place), so a counter or gauge series costs no allocation; a
/// histogram series costs its snapshot.
/// </summary>
internal sealed class PrometheusProtobufWriter(IBufferWriter<byte> output, int? nativeScale = null) : IMetricsWriter, IDisposable
{
    public const string ContentType = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

    // metrics.proto: MetricType
    private const int Counter = 0;
    private const int Gauge = 1;
    private const int Histogram = 4;

    private readonly HashSet<string> _written = new(StringComparer.Ordinal);
    // The family buffer: this thread's, reused from one scrape to the next (a scrape renders on one thread, start to
    // finish), so even the largest family's buffer is not allocated again; held by one writer at a time.
    [ThreadStatic]
    private static ProtobufWriter? t_family;

    private ProtobufWriter? _family = TakeFamilyBuffer();
    private int _familyStart = -1;
    private PrometheusNames? _names;
    private int _type;
    private long _invalid;
    private long _conflicts;

    /// <summary>The families left out of this scrape, in order.</summary>
    public List<MetricDescriptor> LeftOut { get; } = [];

    public void BeginFamily(MetricDescriptor descriptor)
    {
        Flush();
        PrometheusNames names = PrometheusNaming.For(descriptor);
        if (!names.TryReserve(_written))
        {
            _names = null;
            _conflicts++;
            LeftOut.Add(descriptor);
            return;
        }

        _names = names;
        _type = TypeOf(names);
        Begin(names.TextFamilyName, descriptor.Description ?? descriptor.Name, _type, names.Unit);
    }

    public void WritePoint(MetricLabels labels, double value)
    {
        if (_names is null)
        {
            return;
        }

        ProtobufWriter m = _family!;
        int metric = m.BeginMessage(4);
        Labels(m, labels, histogram: false);
        m.Message(_type == Counter ? 3 : 2, value, static (v, x) => v.Double(1, x)); // Counter/Gauge { double value = 1 }
        m.EndLength(metric);
    }

    public void WritePoint(MetricLabels labels, long value) => WritePoint(labels, (double)value);

    public void WriteHistogram(MetricLabels labels, PerCpuHistogram histogram)
    {
        if (_names is null)
        {
            return;
        }

        HistogramSnapshot s = histogram.Snapshot();
        _invalid += s.Invalid;
        if (nativeScale is int scale && scale < s.Scale)
        {
            s = s.Downscale(scale); // classic buckets, count and sum are unchanged by it
        }

        ProtobufWriter m = _family!;
        int metric = m.BeginMessage(4);
        Labels(m, labels, histogram: true);
        m.Message(7, s, static (h, s) => Native(h, s));
        m.EndLength(metric);
    }

    public void AddInvalid(long count) => _invalid += count;

    /// <summary>Writes the last family and PerCpu's invalid-values total, then gives the family buffer back.</summary>
    public void Finish()
    {
        Flush();
        if (_written.Add("percpu_invalid_values"))
        {
            Total("percpu_invalid_values_total", "Invalid values counted and left out of the metrics.", _invalid);
        }

        if (_written.Add("percpu_metric_name_conflicts"))
        {
            Total("percpu_metric_name_conflicts_total", "Families left out of this scrape because another family already has their Prometheus name.", _conflicts);
        }

        Dispose();
    }

    /// <summary>Gives the family buffer back to this thread (also for a scrape that failed before <see cref="Finish"/>).</summary>
    public void Dispose()
    {
        if (_family is { } family)
        {
            _family = null;
            if (t_family is null)
            {
                t_family = family;
            }
            else
            {
                family.Dispose();
            }
        }
    }

    private static ProtobufWriter TakeFamilyBuffer()
    {
        ProtobufWriter? family = t_family;
        t_family = null;
        return family ?? new ProtobufWriter(64 * 1024);
    }

    /// <summary>One of PerCpu's own counters, as a family of one unlabelled point.</summary>
    private void Total(string name, string help, long value)
    {
        _names = null;
        Begin(name, help, Counter, null);
        ProtobufWriter m = _family!;
        int metric = m.BeginMessage(4);
        m.Message(3, (double)value, static (v, x) => v.Double(1, x));
        m.EndLength(metric);
        Flush();
    }

    /// <summary>The widest span of native buckets written: values far above the range lower the schema instead.</summary>
    private const int MaxNativeBuckets = 4096;

    /// <summary>
    /// metrics.proto Histogram: sample_count 1, sample_sum 2, bucket 3 (cumulative_count 1, upper_bound 2), schema 5,
    /// zero_threshold 6, zero_count 7, positive_span 12 (offset 1, length 2), positive_delta 13.
    /// </summary>
    internal static void Native(ProtobufWriter h, HistogramSnapshot s)
    {
        h.Varint(1, (ulong)s.Count);
        h.Double(2, s.Sum);
        var exemplars = new HistogramExemplar[s.ExplicitBoundaries.Count + 1];
        foreach (HistogramExemplar e in s.Exemplars)
        {
            exemplars[e.BucketIndex] = e;
        }

        for (int i = 0; i <= s.ExplicitBoundaries.Count; i++)
        {
            bool inf = i == s.ExplicitBoundaries.Count;
            h.Message(3, (Count: inf ? s.Count : s.CumulativeCounts[i], Bound: inf ? double.PositiveInfinity : s.ExplicitBoundaries[i], Exemplar: exemplars[i]), static (b, x) =>
            {
                b.Varint(1, (ulong)x.Count);
                b.Double(2, x.Bound);
                if (x.Exemplar.HasValue)
                {
                    b.Message(3, x.Exemplar, static (m, e) => Exemplar(m, e));
                }
            });
        }

        // Values above the range go to the bucket that holds the largest of them (a lower schema if it is far above).
        (int schema, int firstIndex, long[] counts) = s.ExponentialBuckets(MaxNativeBuckets);
        h.SInt32(5, schema);
        h.Double(6, Math.ScaleB(1, s.MinExponent));
        h.Varint(7, (ulong)(s.ZeroCount + s.Underflow));

        // Prometheus's bucket i covers (base^(i-1), base^i]; OpenTelemetry's (and PerCpu's) index i covers (base^i,
        // base^(i+1)]: so a Prometheus index is PerCpu's plus one.
        int first = Array.FindIndex(counts, c => c != 0);
        if (first < 0)
        {
            return;
        }

        // Spans of buckets; a gap of up to two empty buckets stays inside a span (as zero counts), a longer one starts a
        // new span. Deltas run over every bucket inside the spans, in order.
        var runs = new List<(int Start, int Length)>();
        for (int i = first; i < counts.Length; i++)
        {
            if (counts[i] == 0)
            {
                continue;
            }

            if (runs.Count > 0 && i - (runs[^1].Start + runs[^1].Length) <= 2)
            {
                runs[^1] = (runs[^1].Start, i - runs[^1].Start + 1);
            }
            else
            {
                runs.Add((i, 1));
            }
        }

        var spans = new List<(int Offset, int Length)>(runs.Count);
        var deltas = new List<long>();
        long previous = 0;
        int end = 0;
        foreach ((int start, int length) in runs)
        {
            spans.Add((spans.Count == 0 ? firstIndex + start + 1 : start - end, length));
            end = start + length;
            for (int i = start; i < end; i++)
            {
                deltas.Add(counts[i] - previous);
                previous = counts[i];
            }
        }

        foreach ((int offset, int length) in spans)
        {
            h.Message(12, (offset, length), static (span, x) =>
            {
                span.SInt32(1, x.offset);
                span.Varint(2, (ulong)x.length);
            });
        }

        foreach (long d in deltas)
        {
            h.Varint(13, (ulong)((d << 1) ^ (d >> 63))); // sint64, zigzag
        }
    }

    /// <summary>
    /// metrics.proto Exemplar: label 1 (trace_id and span_id as lowercase hex, as in OpenMetrics), value 2, timestamp 3
    /// (google.protobuf.Timestamp: seconds 1, nanos 2).
    /// </summary>
    private static void Exemplar(ProtobufWriter m, HistogramExemplar e)
    {
        Span<byte> id = stackalloc byte[16];
        e.CopyTraceId(id);
        string traceId = Convert.ToHexStringLower(id);
        e.CopySpanId(id);
        string spanId = Convert.ToHexStringLower(id[..8]);
        m.Message(1, traceId, static (l, v) =>
        {
            l.String(1, "trace_id");
            l.String(2, v);
        });
        m.Message(1, spanId, static (l, v) =>
        {
            l.String(1, "span_id");
            l.String(2, v);
        });
        m.Double(2, e.Value);
        m.Message(3, e.TimestampUnixNanoseconds, static (t, ns) =>
        {
            t.Varint(1, (ulong)(ns / 1_000_000_000));
            t.Varint(2, (ulong)(ns % 1_000_000_000));
        });
    }

    private static int TypeOf(PrometheusNames names) => names.Type switch
    {
        "counter" => Counter,
        "histogram" => Histogram,
        _ => Gauge,
    };

    /// <summary>metrics.proto LabelPair: name 1, value 2; the pairs the text formats expose (<see cref="PrometheusNaming.ExposedLabels"/>).</summary>
    private static void Labels(ProtobufWriter m, MetricLabels labels, bool histogram)
    {
        IReadOnlyList<KeyValuePair<string, string>> pairs = PrometheusNaming.ExposedLabels(labels, histogram);
        for (int i = 0; i < pairs.Count; i++) // by index: no enumerator per series
        {
            m.Message(1, pairs[i], static (l, x) =>
            {
                l.String(1, x.Key);
                l.String(2, x.Value);
            });
        }
    }

    /// <summary>Starts a MetricFamily (name 1, help 2, type 3, unit 5; metrics 4 follow), length-delimited, in the family buffer.</summary>
    private void Begin(string name, string help, int type, string? unit)
    {
        ProtobufWriter family = _family!;
        family.Reset();
        _familyStart = family.BeginLength();
        family.String(1, name);
        family.String(2, help);
        family.Varint(3, (ulong)type);
        if (unit is not null)
        {
            family.String(5, unit);
        }
    }

    /// <summary>Closes the family being written, if any, and copies it to the output.</summary>
    private void Flush()
    {
        if (_familyStart >= 0 && _family is { } family)
        {
            family.EndLength(_familyStart);
            output.Write(family.WrittenSpan);
        }

        _familyStart = -1;
        _names = null;
    }
}
