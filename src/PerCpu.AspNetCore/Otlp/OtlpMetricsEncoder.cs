using PerCpu.AspNetCore.Internal;
using PerCpu.Families;

namespace PerCpu.AspNetCore.Otlp;

/// <summary>One histogram data point to export: a series' labels and what its shards held.</summary>
internal readonly record struct HistogramPoint(RequestSeries Series, HistogramSnapshot Snapshot, ulong StartUnixNano);

/// <summary>
/// What one export sends, read from the store. <see cref="WithOtherMetrics"/> false: only the duration points (the later
/// parts of a batch split because the collector found it too large).
/// </summary>
internal sealed record OtlpBatch(
    ulong TimeUnixNano,
    ulong ProcessStartUnixNano,
    OtlpTemporality Temporality,
    IReadOnlyList<HistogramPoint> Durations,
    IReadOnlyList<(string Method, string Scheme, long Value)> Active,
    IReadOnlyList<(string? Route, string Window, double Rate)> Rates,
    long SeriesCount,
    long OverflowRecords,
    ulong OverflowStartUnixNano,
    bool WithOtherMetrics = true)
{
    /// <summary>The app's families (registry and Meter API listener), cumulative; sent with the other metrics.</summary>
    public IReadOnlyList<CollectedFamily> Families { get; init; } = [];
}

/// <summary>
/// Encodes an <c>opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest</c> (field numbers of
/// opentelemetry-proto v1, checked by the tests against OpenTelemetry JS's generated decoder).
/// </summary>
internal static class OtlpMetricsEncoder
{
    private const int Delta = 1;
    private const int Cumulative = 2;

    public static byte[] Encode(OtlpBatch batch, IReadOnlyDictionary<string, string> resource, HistogramLayout layout, bool exponential)
    {
        var request = new ProtobufWriter();
        request.Message(1, (batch, resource, layout, exponential), static (rm, s) =>
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
                    scope.String(1, MeterBridge.MeterName);
                    scope.String(2, typeof(OtlpMetricsEncoder).Assembly.GetName().Version?.ToString() ?? "");
                });
                WriteMetrics(sm, s.batch, s.layout, s.exponential);
            });
        });
        return request.WrittenSpan.ToArray();
    }

    private static void WriteMetrics(ProtobufWriter sm, OtlpBatch batch, HistogramLayout layout, bool exponential)
    {
        int temporality = batch.Temporality == OtlpTemporality.Delta ? Delta : Cumulative;

        sm.Message(2, (batch, layout, exponential, temporality), static (m, s) =>
        {
            m.String(1, "http.server.request.duration");
            m.String(2, "Duration of HTTP server requests.");
            m.String(3, "s");
            m.Message(s.exponential ? 10 : 9, s, static (h, s) =>
            {
                foreach (HistogramPoint point in s.batch.Durations)
                {
                    h.Message(1, (point, s.batch.TimeUnixNano, s.layout), s.exponential ? ExponentialPoint : ExplicitPoint);
                }

                h.Varint(2, (ulong)s.temporality);
            });
        });

        if (!batch.WithOtherMetrics)
        {
            return;
        }

        sm.Message(2, batch, static (m, batch) =>
        {
            m.String(1, "http.server.active_requests");
            m.String(2, "Number of active HTTP server requests.");
            m.String(3, "{request}");
            m.Message(7, batch, static (sum, batch) =>
            {
                foreach ((string method, string scheme, long value) in batch.Active)
                {
                    sum.Message(1, (batch, method, scheme, value), static (p, s) =>
                    {
                        p.Message(7, ("http.request.method", (object)s.method), KeyValue);
                        p.Message(7, ("url.scheme", (object)s.scheme), KeyValue);
                        p.Fixed64(2, s.batch.ProcessStartUnixNano);
                        p.Fixed64(3, s.batch.TimeUnixNano);
                        p.Fixed64(6, (ulong)s.value); // as_int (sfixed64)
                    });
                }

                sum.Varint(2, Cumulative); // an up-down counter is cumulative under every temporality preference
                sum.Bool(3, false);
            });
        });

        sm.Message(2, batch, static (m, batch) =>
        {
            m.String(1, "percpu.http.server.request_rate");
            m.String(2, "Requests per second over a window, by route (absent: all routes).");
            m.String(3, "{request}/s");
            m.Message(5, batch, static (gauge, batch) =>
            {
                foreach ((string? route, string window, double rate) in batch.Rates)
                {
                    gauge.Message(1, (batch.TimeUnixNano, route, window, rate), static (p, s) =>
                    {
                        if (s.route is not null)
                        {
                            p.Message(7, ("http.route", (object)s.route), KeyValue);
                        }

                        p.Message(7, ("window", (object)s.window), KeyValue);
                        p.Fixed64(3, s.TimeUnixNano);
                        p.Double(4, s.rate);
                    });
                }
            });
        });

        sm.Message(2, batch, static (m, batch) =>
        {
            m.String(1, "percpu.series");
            m.String(3, "{series}");
            m.Message(5, batch, static (gauge, batch) => gauge.Message(1, batch, static (p, b) =>
            {
                p.Fixed64(3, b.TimeUnixNano);
                p.Fixed64(6, (ulong)b.SeriesCount);
            }));
        });

        sm.Message(2, (batch, temporality), static (m, s) =>
        {
            m.String(1, "percpu.series.overflow_records");
            m.String(3, "{request}");
            m.Message(7, s, static (sum, s) =>
            {
                sum.Message(1, s.batch, static (p, b) =>
                {
                    p.Fixed64(2, b.OverflowStartUnixNano);
                    p.Fixed64(3, b.TimeUnixNano);
                    p.Fixed64(6, (ulong)b.OverflowRecords);
                });
                sum.Varint(2, (ulong)s.temporality);
                sum.Bool(3, true);
            });
        });

        foreach (CollectedFamily family in batch.Families)
        {
            sm.Message(2, (family, batch, exponential), static (m, s) => WriteFamily(m, s.family, s.batch, s.exponential));
        }
    }

    /// <summary>A family from the registry: Sum (monotonic or not), Gauge, or (exponential) Histogram; always cumulative.</summary>
    private static void WriteFamily(ProtobufWriter m, CollectedFamily family, OtlpBatch batch, bool exponential)
    {
        MetricDescriptor d = family.Descriptor;
        m.String(1, d.Name);
        if (d.Description is not null)
        {
            m.String(2, d.Description);
        }

        if (d.Unit is not null)
        {
            m.String(3, d.Unit);
        }

        switch (d.Type)
        {
            case MetricType.Histogram:
                m.Message(exponential ? 10 : 9, (family, batch, exponential), static (h, s) =>
                {
                    foreach ((MetricLabels labels, HistogramSnapshot snapshot) in s.family.Histograms)
                    {
                        if (s.exponential)
                        {
                            h.Message(1, (labels, snapshot, s.batch), static (p, x) => ExponentialCore(p, x.snapshot, x.batch.ProcessStartUnixNano, x.batch.TimeUnixNano, q => LabelAttributes(q, 1, x.labels)));
                        }
                        else
                        {
                            h.Message(1, (labels, snapshot, s.batch), static (p, x) => ExplicitCore(p, x.snapshot, x.batch.ProcessStartUnixNano, x.batch.TimeUnixNano, q => LabelAttributes(q, 9, x.labels)));
                        }
                    }

                    h.Varint(2, Cumulative);
                });
                break;
            case MetricType.Gauge:
                m.Message(5, (family, batch), static (g, s) => NumberPoints(g, s.family, s.batch, withStart: false));
                break;
            default:
                m.Message(7, (family, batch), static (sum, s) =>
                {
                    NumberPoints(sum, s.family, s.batch, withStart: true);
                    sum.Varint(2, Cumulative);
                    sum.Bool(3, s.family.Descriptor.Type == MetricType.Counter);
                });
                break;
        }
    }

    private static void NumberPoints(ProtobufWriter data, CollectedFamily family, OtlpBatch batch, bool withStart)
    {
        foreach ((MetricLabels labels, double? asDouble, long asLong) in family.Points)
        {
            data.Message(1, (labels, asDouble, asLong, batch, withStart), static (p, x) =>
            {
                LabelAttributes(p, 7, x.labels);
                if (x.withStart)
                {
                    p.Fixed64(2, x.batch.ProcessStartUnixNano);
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
            p.Message(field, (labels.Names[i], (object)labels.Values[i]), KeyValue);
        }
    }

    private static void ExplicitPoint(ProtobufWriter p, (HistogramPoint Point, ulong Time, HistogramLayout Layout) s) =>
        ExplicitCore(p, s.Point.Snapshot, s.Point.StartUnixNano, s.Time, q => Attributes(q, 9, s.Point.Series));

    private static void ExponentialPoint(ProtobufWriter p, (HistogramPoint Point, ulong Time, HistogramLayout Layout) s) =>
        ExponentialCore(p, s.Point.Snapshot, s.Point.StartUnixNano, s.Time, q => Attributes(q, 1, s.Point.Series));

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
        if (snap.Count > 0)
        {
            p.Double(11, snap.Min);
            p.Double(12, snap.Max);
        }
    }

    /// <summary>
    /// PerCpu's buckets exactly: zero_count holds exact zeros and the underflow bucket, zero_threshold = 2^MinExponent;
    /// positive buckets are the in-range exponential buckets with leading and trailing zeros trimmed; values above
    /// 2^MaxExponent (the overflow bucket) are reported in the first bucket above the range, and max tells their true size.
    /// </summary>
    private static void ExponentialCore(ProtobufWriter p, HistogramSnapshot snap, ulong start, ulong time, Action<ProtobufWriter> attributes)
    {
        attributes(p);
        p.Fixed64(2, start);
        p.Fixed64(3, time);
        p.Fixed64(4, (ulong)snap.Count);
        p.Double(5, snap.Sum);
        p.SInt32(6, snap.Scale);
        p.Fixed64(7, (ulong)(snap.ZeroCount + snap.Underflow));
        long[] buckets = [.. snap.ExponentialCounts, snap.Overflow];
        int first = Array.FindIndex(buckets, c => c != 0);
        if (first >= 0)
        {
            int last = Array.FindLastIndex(buckets, c => c != 0);
            p.Message(8, (Offset: snap.Offset + first, Counts: buckets[first..(last + 1)]), static (b, x) =>
            {
                b.SInt32(1, x.Offset);
                b.PackedVarint(2, x.Counts);
            });
        }

        if (snap.Count > 0)
        {
            p.Double(12, snap.Min);
            p.Double(13, snap.Max);
        }

        p.Double(14, Math.ScaleB(1, snap.MinExponent));
    }

    private static void Attributes(ProtobufWriter p, int field, RequestSeries s)
    {
        if (s.IsOverflow)
        {
            p.Message(field, ("otel.metric.overflow", (object)true), KeyValue);
            return;
        }

        p.Message(field, ("http.request.method", (object)s.Method), KeyValue);
        p.Message(field, ("http.route", (object)s.Route), KeyValue);
        p.Message(field, ("http.response.status_code", s.StatusCode), KeyValue);
        p.Message(field, ("url.scheme", (object)s.Scheme), KeyValue);
        p.Message(field, ("network.protocol.version", (object)s.Protocol), KeyValue);
        if (s.ErrorType is not null)
        {
            p.Message(field, ("error.type", (object)s.ErrorType), KeyValue);
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
                default:
                    any.String(1, value.ToString() ?? "");
                    break;
            }
        });
    }
}
