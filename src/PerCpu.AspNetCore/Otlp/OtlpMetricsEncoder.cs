using PerCpu.Families;

namespace PerCpu.AspNetCore.Otlp;

/// <summary>
/// One delta-capable histogram point to export: its labels and what its shards held. <see cref="Key"/> identifies the
/// series to the exporter (for pending deltas); the encoder reads only the labels and the snapshot.
/// </summary>
internal readonly record struct HistogramPoint(object Key, MetricLabels Labels, HistogramSnapshot Snapshot, ulong StartUnixNano);

/// <summary>
/// What one export sends: one histogram family whose points may be deltas (<see cref="Histogram"/>,
/// <see cref="Points"/>), then every other family, cumulative (<see cref="Families"/>). <see cref="WithOtherMetrics"/>
/// false: only the histogram points (the later parts of a batch split because the collector found it too large).
/// </summary>
internal sealed record OtlpBatch(
    ulong TimeUnixNano,
    ulong ProcessStartUnixNano,
    OtlpTemporality Temporality,
    MetricDescriptor Histogram,
    IReadOnlyList<HistogramPoint> Points,
    IReadOnlyList<CollectedFamily> Families,
    bool WithOtherMetrics = true);

/// <summary>
/// Encodes an <c>opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest</c> (field numbers of
/// opentelemetry-proto v1, checked by the tests against OpenTelemetry JS's generated decoder).
/// </summary>
internal static class OtlpMetricsEncoder
{
    /// <summary>The instrumentation scope of everything PerCpu exports.</summary>
    public const string ScopeName = "PerCpu.AspNetCore";

    private const int Delta = 1;
    private const int Cumulative = 2;

    public static byte[] Encode(OtlpBatch batch, IReadOnlyDictionary<string, string> resource, bool exponential)
    {
        using var request = new ProtobufWriter();
        request.Message(1, (batch, resource, exponential), static (rm, s) =>
        {
            rm.Message(1, s.resource, static (r, attributes) =>
            {
                foreach ((string key, string value) in attributes)
                {
                    r.Message(1, (key, (object)value), KeyValue);
                }
            });
            rm.Message(2, s, static (sm, s) =>
            {
                sm.Message(1, 0, static (scope, _) =>
                {
                    scope.String(1, ScopeName);
                    scope.String(2, typeof(OtlpMetricsEncoder).Assembly.GetName().Version?.ToString() ?? "");
                });
                WriteMetrics(sm, s.batch, s.exponential);
            });
        });
        return request.WrittenSpan.ToArray();
    }

    private static void WriteMetrics(ProtobufWriter sm, OtlpBatch batch, bool exponential)
    {
        int temporality = batch.Temporality == OtlpTemporality.Delta ? Delta : Cumulative;
        sm.Message(2, (batch, exponential, temporality), static (m, s) =>
        {
            Header(m, s.batch.Histogram);
            m.Message(s.exponential ? 10 : 9, s, static (h, s) =>
            {
                foreach (HistogramPoint point in s.batch.Points)
                {
                    if (s.exponential)
                    {
                        h.Message(1, (point, s.batch.TimeUnixNano), static (p, x) => ExponentialCore(p, x.point.Snapshot, x.point.StartUnixNano, x.TimeUnixNano, q => LabelAttributes(q, 1, x.point.Labels)));
                    }
                    else
                    {
                        h.Message(1, (point, s.batch.TimeUnixNano), static (p, x) => ExplicitCore(p, x.point.Snapshot, x.point.StartUnixNano, x.TimeUnixNano, q => LabelAttributes(q, 9, x.point.Labels)));
                    }
                }

                h.Varint(2, (ulong)s.temporality);
            });
        });

        if (!batch.WithOtherMetrics)
        {
            return;
        }

        foreach (CollectedFamily family in batch.Families)
        {
            if (family.Points.Count == 0 && family.Histograms.Count == 0)
            {
                continue; // no series yet (an instrument nothing recorded into): no metric, as the OpenTelemetry SDK sends none
            }

            sm.Message(2, (family, batch, exponential), static (m, s) => WriteFamily(m, s.family, s.batch, s.exponential));
        }
    }

    /// <summary>A family from the registry: Sum (monotonic or not), Gauge, or (exponential) Histogram; counters and histograms with delta temporality when the family was read as changes.</summary>
    private static void WriteFamily(ProtobufWriter m, CollectedFamily family, OtlpBatch batch, bool exponential)
    {
        MetricDescriptor d = family.Descriptor;
        Header(m, d);
        switch (d.Type)
        {
            case MetricType.Histogram:
                m.Message(exponential ? 10 : 9, (family, batch, exponential), static (h, s) =>
                {
                    foreach ((MetricLabels labels, HistogramSnapshot snapshot, ulong start) in s.family.Histograms)
                    {
                        ulong from = start == 0 ? s.batch.ProcessStartUnixNano : start;
                        if (s.exponential)
                        {
                            h.Message(1, (labels, snapshot, s.batch, from), static (p, x) => ExponentialCore(p, x.snapshot, x.from, x.batch.TimeUnixNano, q => LabelAttributes(q, 1, x.labels)));
                        }
                        else
                        {
                            h.Message(1, (labels, snapshot, s.batch, from), static (p, x) => ExplicitCore(p, x.snapshot, x.from, x.batch.TimeUnixNano, q => LabelAttributes(q, 9, x.labels)));
                        }
                    }

                    h.Varint(2, (ulong)(s.family.Delta ? Delta : Cumulative));
                });
                break;
            case MetricType.Gauge:
                m.Message(5, (family, batch), static (g, s) => NumberPoints(g, s.family, s.batch, withStart: false));
                break;
            default:
                m.Message(7, (family, batch), static (sum, s) =>
                {
                    NumberPoints(sum, s.family, s.batch, withStart: true);
                    sum.Varint(2, (ulong)(s.family.Delta ? Delta : Cumulative));
                    sum.Bool(3, s.family.Descriptor.Type == MetricType.Counter);
                });
                break;
        }
    }

    /// <summary>A metric's name, description and unit.</summary>
    private static void Header(ProtobufWriter m, MetricDescriptor d)
    {
        m.String(1, d.Name);
        if (d.Description is not null)
        {
            m.String(2, d.Description);
        }

        if (d.Unit is not null)
        {
            m.String(3, d.Unit);
        }
    }

    private static void NumberPoints(ProtobufWriter data, CollectedFamily family, OtlpBatch batch, bool withStart)
    {
        foreach ((MetricLabels labels, double? asDouble, long asLong, ulong start) in family.Points)
        {
            data.Message(1, (labels, asDouble, asLong, batch, withStart, start), static (p, x) =>
            {
                LabelAttributes(p, 7, x.labels);
                if (x.withStart)
                {
                    p.Fixed64(2, x.start == 0 ? x.batch.ProcessStartUnixNano : x.start);
                }

                p.Fixed64(3, x.batch.TimeUnixNano);
                if (x.asDouble is double value)
                {
                    p.Double(4, value);
                }
                else
                {
                    p.Fixed64(6, (ulong)x.asLong); // as_int (sfixed64)
                }
            });
        }
    }

    private static void LabelAttributes(ProtobufWriter p, int field, MetricLabels labels)
    {
        for (int i = 0; i < labels.Count; i++)
        {
            p.Message(field, (labels.Names[i], labels.RawValues[i]), KeyValue);
        }
    }

    private static void ExplicitCore(ProtobufWriter p, HistogramSnapshot snap, ulong start, ulong time, Action<ProtobufWriter> attributes)
    {
        attributes(p);
        p.Fixed64(2, start);
        p.Fixed64(3, time);
        p.Fixed64(4, (ulong)snap.Count);
        p.Double(5, snap.Sum);
        int n = snap.CumulativeCounts.Count;
        long[] counts = new long[n + 1];
        long previous = 0;
        for (int i = 0; i < n; i++)
        {
            counts[i] = snap.CumulativeCounts[i] - previous;
            previous = snap.CumulativeCounts[i];
        }

        counts[n] = snap.Count - previous;
        p.PackedFixed64(6, counts);
        p.PackedDouble(7, [.. snap.ExplicitBoundaries]);
        Exemplars(p, 8, snap);
        if (snap.Count > 0)
        {
            p.Double(11, snap.Min);
            p.Double(12, snap.Max);
        }
    }

    /// <summary>The widest span of dense exponential buckets sent: values far above the range lower the scale instead.</summary>
    private const int MaxExponentialBuckets = 4096;

    /// <summary>
    /// PerCpu's buckets exactly: zero_count holds exact zeros and the underflow bucket, zero_threshold = 2^MinExponent;
    /// positive buckets are the in-range exponential buckets with leading and trailing zeros trimmed; values above
    /// 2^MaxExponent (the overflow bucket) are reported in the bucket that holds max (the largest of them).
    /// </summary>
    private static void ExponentialCore(ProtobufWriter p, HistogramSnapshot snap, ulong start, ulong time, Action<ProtobufWriter> attributes)
    {
        attributes(p);
        p.Fixed64(2, start);
        p.Fixed64(3, time);
        p.Fixed64(4, (ulong)snap.Count);
        p.Double(5, snap.Sum);
        (int scale, int offset, long[] buckets) = snap.ExponentialBuckets(MaxExponentialBuckets);
        p.SInt32(6, scale);
        p.Fixed64(7, (ulong)(snap.ZeroCount + snap.Underflow));
        int first = Array.FindIndex(buckets, c => c != 0);
        if (first >= 0)
        {
            int last = Array.FindLastIndex(buckets, c => c != 0);
            p.Message(8, (Offset: offset + first, Counts: buckets[first..(last + 1)]), static (b, x) =>
            {
                b.SInt32(1, x.Offset);
                b.PackedVarint(2, x.Counts);
            });
        }

        Exemplars(p, 11, snap);
        if (snap.Count > 0)
        {
            p.Double(12, snap.Min);
            p.Double(13, snap.Max);
        }

        p.Double(14, Math.ScaleB(1, snap.MinExponent));
    }

    /// <summary>OTLP Exemplar: time_unix_nano 2 (fixed64), as_double 3, span_id 4 (8 bytes), trace_id 5 (16 bytes).</summary>
    private static void Exemplars(ProtobufWriter p, int field, HistogramSnapshot snap)
    {
        foreach (HistogramExemplar exemplar in snap.Exemplars)
        {
            p.Message(field, exemplar, static (x, e) =>
            {
                Span<byte> id = stackalloc byte[16];
                x.Fixed64(2, (ulong)e.TimestampUnixNanoseconds);
                x.Double(3, e.Value);
                e.CopySpanId(id);
                x.Bytes(4, id[..8]);
                e.CopyTraceId(id);
                x.Bytes(5, id);
            });
        }
    }

    private static void KeyValue(ProtobufWriter kv, (string Key, object Value) x)
    {
        kv.String(1, x.Key);
        kv.Message(2, x.Value, static (any, value) =>
        {
            switch (value)
            {
                case bool b:
                    any.Bool(2, b);
                    break;
                case int i:
                    any.Varint(3, (ulong)(long)i);
                    break;
                case long l:
                    any.Varint(3, (ulong)l);
                    break;
                case short or byte:
                    any.Varint(3, (ulong)Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture));
                    break;
                case double or float:
                    any.Double(4, Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture));
                    break;
                default:
                    any.String(1, value.ToString() ?? "");
                    break;
            }
        });
    }
}
