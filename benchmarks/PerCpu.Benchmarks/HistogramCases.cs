using System.Diagnostics.Metrics;
using HdrHistogram;

namespace PerCpu.Benchmarks;

/// <summary>
/// Histogram cases: every case records the same log-normal latencies (median 2 ms, sigma 1.5, in seconds; in
/// nanoseconds for HdrHistogram), cycling through a per-thread array of 4096 values.
/// </summary>
internal static class HistogramCases
{
    private static readonly KeyValuePair<string, object?> s_tag1 = new("http.request.method", "GET");
    private static readonly KeyValuePair<string, object?> s_tag2 = new("http.route", "/items/{id}");
    private static readonly KeyValuePair<string, object?> s_tag3 = new("http.response.status_code", "200");

    public const string PerCpu = "PerCpuHistogram.Record";
    public const string Shared = "one shared histogram, interlocked buckets";
    public const string Otel0 = "OTel SDK Histogram<double>.Record, 0 tags";
    public const string Otel3 = "OTel SDK Histogram<double>.Record, 3 tags";
    public const string OtelExp3 = "OTel SDK exponential view, 3 tags";
    public const string Prom = "prometheus-net Histogram.Observe";
    public const string Hdr = "HdrHistogram LongConcurrentHistogram";
    public const string HdrRecorder = "HdrHistogram Recorder";

    public static double[] Latencies(int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, 4096).Select(_ => 0.002 * Math.Exp(1.5 * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()))).ToArray();
    }

    public static void Add(List<Case> cases, List<(string, string, string)> ratios)
    {
        var perCpu = new PerCpuHistogram();
        cases.Add(new OperationCase<PerCpuRecord>(PerCpu, t => new PerCpuRecord(perCpu, Latencies(t)), observed: () => perCpu.Snapshot().Count));

        var shared = new SharedHistogram(HistogramLayout.Default);
        cases.Add(new OperationCase<SharedRecord>(Shared, t => new SharedRecord(shared, Latencies(t)), observed: shared.Count));

        var otel = new OtelPeer("PerCpu.Benchmarks.Histograms");
        Histogram<double> otelHistogram = otel.Meter.CreateHistogram<double>("duration", "s", null, null, new InstrumentAdvice<double> { HistogramBucketBoundaries = HistogramLayout.AspNetCoreRequestDurationBoundaries });
        cases.Add(new OperationCase<OtelRecord0>(Otel0, t => new OtelRecord0(otelHistogram, Latencies(t))));
        cases.Add(new OperationCase<OtelRecord>(Otel3, t => new OtelRecord(otelHistogram, Latencies(t))));
        var otelExp = new OtelPeer("PerCpu.Benchmarks.Histograms.Exp", exponentialHistogram: true);
        Histogram<double> otelExpHistogram = otelExp.Meter.CreateHistogram<double>("duration", "s");
        cases.Add(new OperationCase<OtelRecord>(OtelExp3, t => new OtelRecord(otelExpHistogram, Latencies(t))));

        Prometheus.Histogram prom = Prometheus.Metrics.CreateHistogram("bench_duration_seconds", "duration", new Prometheus.HistogramConfiguration { Buckets = [.. HistogramLayout.AspNetCoreRequestDurationBoundaries] });
        cases.Add(new OperationCase<PromObserve>(Prom, t => new PromObserve(prom, Latencies(t))));

        var hdr = new LongConcurrentHistogram(1, 3_600_000_000_000, 3);
        cases.Add(new OperationCase<HdrRecord>(Hdr, t => new HdrRecord(hdr, Nanoseconds(t)), observed: () => hdr.TotalCount));
        var recorder = new Recorder(1, 3_600_000_000_000, 3, (id, low, high, digits) => new LongConcurrentHistogram(id, low, high, digits));
        cases.Add(new OperationCase<HdrRecorderRecord>(HdrRecorder, t => new HdrRecorderRecord(recorder, Nanoseconds(t))));

        ratios.Add(("PerCpu / OTel SDK explicit, 0 tags", PerCpu, Otel0));
        ratios.Add(("PerCpu / OTel SDK explicit, 3 tags", PerCpu, Otel3));
        ratios.Add(("PerCpu / OTel SDK exponential, 3 tags", PerCpu, OtelExp3));
        ratios.Add(("PerCpu / prometheus-net", PerCpu, Prom));
        ratios.Add(("PerCpu / HdrHistogram concurrent", PerCpu, Hdr));
        ratios.Add(("PerCpu / shared interlocked histogram", PerCpu, Shared));
    }

    private static long[] Nanoseconds(int seed) => Latencies(seed).Select(s => Math.Max(1, (long)(s * 1e9))).ToArray();

    /// <summary>The obvious lock-free design: the same exact index, one shared bucket array, interlocked adds.</summary>
    internal sealed class SharedHistogram(HistogramLayout layout)
    {
        private readonly long[] _buckets = new long[layout.ExponentialBucketCount + 2];
        private long _sumBits;

        public void Record(double v)
        {
            int rel = layout.MapToIndex(v) - layout.FirstIndex;
            Interlocked.Increment(ref _buckets[rel < 0 ? 0 : rel >= _buckets.Length - 2 ? _buckets.Length - 1 : rel + 1]);
            long seen = Volatile.Read(ref _sumBits);
            while (true)
            {
                long found = Interlocked.CompareExchange(ref _sumBits, BitConverter.DoubleToInt64Bits(BitConverter.Int64BitsToDouble(seen) + v), seen);
                if (found == seen)
                {
                    return;
                }

                seen = found;
            }
        }

        public long Count() => _buckets.Sum();
    }

    private struct PerCpuRecord(PerCpuHistogram h, double[] values) : IOperation
    {
        private int _i;

        public void Invoke() => h.Record(values[_i++ & 4095]);
    }

    private struct SharedRecord(SharedHistogram h, double[] values) : IOperation
    {
        private int _i;

        public void Invoke() => h.Record(values[_i++ & 4095]);
    }

    private struct OtelRecord(Histogram<double> h, double[] values) : IOperation
    {
        private int _i;

        public void Invoke() => h.Record(values[_i++ & 4095], s_tag1, s_tag2, s_tag3);
    }

    private struct OtelRecord0(Histogram<double> h, double[] values) : IOperation
    {
        private int _i;

        public void Invoke() => h.Record(values[_i++ & 4095]);
    }

    private struct PromObserve(Prometheus.Histogram h, double[] values) : IOperation
    {
        private int _i;

        public void Invoke() => h.Observe(values[_i++ & 4095]);
    }

    private struct HdrRecord(LongConcurrentHistogram h, long[] values) : IOperation
    {
        private int _i;

        public void Invoke() => h.RecordValue(values[_i++ & 4095]);
    }

    private struct HdrRecorderRecord(Recorder r, long[] values) : IOperation
    {
        private int _i;

        public void Invoke() => r.RecordValue(values[_i++ & 4095]);
    }
}
