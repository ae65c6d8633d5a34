using System.Diagnostics.Metrics;
using PerCpu.Families;

namespace PerCpu.Benchmarks;

/// <summary>
/// The standard Meter API aggregated by PerCpu's listener against the same calls aggregated by the OpenTelemetry SDK
/// (each on its own meter, so each listener sees only its instruments), and a labelled family's child against the
/// bare instrument. Counts through PerCpu are checked after every run.
/// </summary>
internal static class MeterApiCases
{
    private static readonly KeyValuePair<string, object?> s_tag1 = new("http.request.method", "GET");
    private static readonly KeyValuePair<string, object?> s_tag2 = new("http.route", "/items/{id}");
    private static readonly KeyValuePair<string, object?> s_tag3 = new("http.response.status_code", "200");

    public const string PerCpuAdd0 = "Counter<long>.Add, 0 tags, PerCpu listener";
    public const string PerCpuAdd3 = "Counter<long>.Add, 3 tags, PerCpu listener";
    public const string OtelAdd0 = "Counter<long>.Add, 0 tags, OTel SDK";
    public const string OtelAdd3 = "Counter<long>.Add, 3 tags, OTel SDK";
    public const string PerCpuAdd3Rotating = "Counter<long>.Add, 3 tags, 16 tag sets in turn, PerCpu listener";
    public const string OtelAdd3Rotating = "Counter<long>.Add, 3 tags, 16 tag sets in turn, OTel SDK";
    public const string PerCpuAdd3Fresh = "Counter<long>.Add, 3 tags, 16 sets, fresh string instances, PerCpu listener";
    public const string OtelAdd3Fresh = "Counter<long>.Add, 3 tags, 16 sets, fresh string instances, OTel SDK";
    public const string PerCpuAdd3Ints = "Counter<long>.Add, 3 tags, 16 sets, status code as int, PerCpu listener";
    public const string OtelAdd3Ints = "Counter<long>.Add, 3 tags, 16 sets, status code as int, OTel SDK";
    public const string PerCpuAdd3AnyOrder = "Counter<long>.Add, 3 tags, 16 sets, tags in any order, PerCpu listener";
    public const string OtelAdd3AnyOrder = "Counter<long>.Add, 3 tags, 16 sets, tags in any order, OTel SDK";
    public const string PerCpuAdd1Adversarial = "Counter<long>.Add, 1 tag, 2,000 adversarial values, PerCpu listener";
    public const string PerCpuAdd1Random = "Counter<long>.Add, 1 tag, 2,000 random values, PerCpu listener";
    public const string PerCpuRecord3 = "Histogram<double>.Record, 3 tags, PerCpu listener";
    public const string OtelRecord3 = "Histogram<double>.Record, 3 tags, OTel SDK";
    public const string Bare = "PerCpuCounter.Increment (bare)";
    public const string Child = "CounterFamily child .Increment";
    public const string BareHistogram = "PerCpuHistogram.Record (bare)";
    public const string ChildHistogram = "HistogramFamily child .Record";

    private static PerCpuMeterListener? s_listener;
    private static OtelPeer? s_otel;

    public static void Add(List<Case> cases, List<(string, string, string)> ratios)
    {
        var perCpuMeter = new Meter("PerCpu.Benchmarks.MeterApi.PerCpu");
        s_listener ??= new PerCpuMeterListener([perCpuMeter.Name]);
        Counter<long> perCpu0 = perCpuMeter.CreateCounter<long>("requests0");
        Counter<long> perCpu3 = perCpuMeter.CreateCounter<long>("requests3");
        Histogram<double> perCpuHistogram = perCpuMeter.CreateHistogram("duration", "s", null, null, new InstrumentAdvice<double> { HistogramBucketBoundaries = HistogramLayout.AspNetCoreRequestDurationBoundaries });
        cases.Add(new OperationCase<Add0>(PerCpuAdd0, _ => new Add0(perCpu0), observed: () => (long)Total("requests0")));
        cases.Add(new OperationCase<Add3>(PerCpuAdd3, _ => new Add3(perCpu3), observed: () => (long)Total("requests3")));
        Counter<long> perCpuRotating = perCpuMeter.CreateCounter<long>("requests3rotating");
        cases.Add(new OperationCase<Add3Rotating>(PerCpuAdd3Rotating, _ => new Add3Rotating(perCpuRotating), observed: () => (long)Total("requests3rotating")));
        Counter<long> perCpuFresh = perCpuMeter.CreateCounter<long>("requests3fresh");
        Counter<long> perCpuInts = perCpuMeter.CreateCounter<long>("requests3ints");
        Counter<long> perCpuAnyOrder = perCpuMeter.CreateCounter<long>("requests3anyorder");
        Counter<long> perCpuAdversarial = perCpuMeter.CreateCounter<long>("requests1adversarial");
        Counter<long> perCpuRandom = perCpuMeter.CreateCounter<long>("requests1random");
        cases.Add(new OperationCase<Add3Fresh>(PerCpuAdd3Fresh, t => new Add3Fresh(perCpuFresh, t), observed: () => (long)Total("requests3fresh")));
        cases.Add(new OperationCase<Add3Ints>(PerCpuAdd3Ints, t => new Add3Ints(perCpuInts, t), observed: () => (long)Total("requests3ints")));
        cases.Add(new OperationCase<Add3AnyOrder>(PerCpuAdd3AnyOrder, _ => new Add3AnyOrder(perCpuAnyOrder), observed: () => (long)Total("requests3anyorder")));
        cases.Add(new OperationCase<Add1Of>(PerCpuAdd1Adversarial, t => new Add1Of(perCpuAdversarial, s_adversarial, t), observed: () => (long)Total("requests1adversarial")));
        cases.Add(new OperationCase<Add1Of>(PerCpuAdd1Random, t => new Add1Of(perCpuRandom, s_random, t), observed: () => (long)Total("requests1random")));
        cases.Add(new OperationCase<Record3>(PerCpuRecord3, t => new Record3(perCpuHistogram, HistogramCases.Latencies(t)), observed: () => (long)Total("duration")));

        s_otel ??= new OtelPeer("PerCpu.Benchmarks.MeterApi.Otel");
        Counter<long> otel0 = s_otel.Meter.CreateCounter<long>("requests0");
        Counter<long> otel3 = s_otel.Meter.CreateCounter<long>("requests3");
        Histogram<double> otelHistogram = s_otel.Meter.CreateHistogram("duration", "s", null, null, new InstrumentAdvice<double> { HistogramBucketBoundaries = HistogramLayout.AspNetCoreRequestDurationBoundaries });
        cases.Add(new OperationCase<Add0>(OtelAdd0, _ => new Add0(otel0)));
        cases.Add(new OperationCase<Add3>(OtelAdd3, _ => new Add3(otel3)));
        Counter<long> otelRotating = s_otel.Meter.CreateCounter<long>("requests3rotating");
        cases.Add(new OperationCase<Add3Rotating>(OtelAdd3Rotating, _ => new Add3Rotating(otelRotating)));
        Counter<long> otelFresh = s_otel.Meter.CreateCounter<long>("requests3fresh");
        Counter<long> otelInts = s_otel.Meter.CreateCounter<long>("requests3ints");
        Counter<long> otelAnyOrder = s_otel.Meter.CreateCounter<long>("requests3anyorder");
        cases.Add(new OperationCase<Add3Fresh>(OtelAdd3Fresh, t => new Add3Fresh(otelFresh, t)));
        cases.Add(new OperationCase<Add3Ints>(OtelAdd3Ints, t => new Add3Ints(otelInts, t)));
        cases.Add(new OperationCase<Add3AnyOrder>(OtelAdd3AnyOrder, _ => new Add3AnyOrder(otelAnyOrder)));
        cases.Add(new OperationCase<Record3>(OtelRecord3, t => new Record3(otelHistogram, HistogramCases.Latencies(t))));

        var registry = new MetricRegistry();
        PerCpuCounter child = registry.CreateCounter("jobs", null, null, "queue", "outcome").WithLabels("mail", "ok");
        var bare = new PerCpuCounter();
        PerCpuHistogram childHistogram = registry.CreateHistogram("job.duration", "s", null, null, "queue").WithLabels("mail");
        var bareHistogram = new PerCpuHistogram();
        cases.Add(new OperationCase<Increment>(Bare, _ => new Increment(bare), observed: bare.Sum));
        cases.Add(new OperationCase<Increment>(Child, _ => new Increment(child), observed: child.Sum));
        cases.Add(new OperationCase<RecordBare>(BareHistogram, t => new RecordBare(bareHistogram, HistogramCases.Latencies(t)), observed: () => bareHistogram.Snapshot().Count));
        cases.Add(new OperationCase<RecordBare>(ChildHistogram, t => new RecordBare(childHistogram, HistogramCases.Latencies(t)), observed: () => childHistogram.Snapshot().Count));

        ratios.Add(("Counter<long>.Add 0 tags: PerCpu / OTel SDK", PerCpuAdd0, OtelAdd0));
        ratios.Add(("Counter<long>.Add 3 tags: PerCpu / OTel SDK", PerCpuAdd3, OtelAdd3));
        ratios.Add(("Counter<long>.Add 3 tags, 16 sets in turn: PerCpu / OTel SDK", PerCpuAdd3Rotating, OtelAdd3Rotating));
        ratios.Add(("Counter<long>.Add 3 tags, 16 sets, fresh strings: PerCpu / OTel SDK", PerCpuAdd3Fresh, OtelAdd3Fresh));
        ratios.Add(("Counter<long>.Add 3 tags, 16 sets, int status: PerCpu / OTel SDK", PerCpuAdd3Ints, OtelAdd3Ints));
        ratios.Add(("Counter<long>.Add 3 tags, 16 sets, any order: PerCpu / OTel SDK", PerCpuAdd3AnyOrder, OtelAdd3AnyOrder));
        ratios.Add(("2,000 adversarial / 2,000 random values (PerCpu)", PerCpuAdd1Adversarial, PerCpuAdd1Random));
        ratios.Add(("Histogram<double>.Record 3 tags: PerCpu / OTel SDK", PerCpuRecord3, OtelRecord3));
        ratios.Add(("family child / bare PerCpuCounter", Child, Bare));
        ratios.Add(("family child / bare PerCpuHistogram", ChildHistogram, BareHistogram));
    }

    private static double Total(string instrument)
    {
        var sum = new SumWriter(instrument);
        s_listener!.Collect(sum);
        return sum.Total;
    }

    /// <summary>Sums one instrument's points (histograms: their counts).</summary>
    private sealed class SumWriter(string name) : IMetricsWriter
    {
        private bool _on;

        public double Total { get; private set; }

        public void BeginFamily(MetricDescriptor descriptor) => _on = descriptor.Name == name;

        public void WritePoint(MetricLabels labels, double value) => Total += _on ? value : 0;

        public void WritePoint(MetricLabels labels, long value) => Total += _on ? value : 0;

        public void WriteHistogram(MetricLabels labels, PerCpuHistogram histogram) => Total += _on ? histogram.Snapshot().Count : 0;

        public void AddInvalid(long count)
        {
        }
    }

    private readonly struct Add0(Counter<long> c) : IOperation
    {
        public void Invoke() => c.Add(1);
    }

    private readonly struct Add3(Counter<long> c) : IOperation
    {
        public void Invoke() => c.Add(1, s_tag1, s_tag2, s_tag3);
    }

    /// <summary>16 tag sets (4 routes x 4 status codes) in turn, values taken from arrays: the per-CPU last-entry shortcut misses, the hash path runs.</summary>
    private struct Add3Rotating(Counter<long> c) : IOperation
    {
        private static readonly string[] s_routes = ["/items/{id}", "/orders/{id}", "/users/{id}/cart", "/"];
        private static readonly string[] s_codes = ["200", "201", "404", "500"];
        private int _i;

        public void Invoke()
        {
            int i = _i++;
            c.Add(1, s_tag1, new KeyValuePair<string, object?>("http.route", s_routes[i & 3]), new KeyValuePair<string, object?>("http.response.status_code", s_codes[(i >> 2) & 3]));
        }
    }

    private static readonly string[] s_routes16 = ["/items/{id}", "/orders/{id}", "/users/{id}/cart", "/"];
    private static readonly string[] s_codes16 = ["200", "201", "404", "500"];

    // 2,000 route-like values of one length that differ only in the middle (one hash and one chain under the old
    // 4-character sampling hash), and 2,000 random ones of the same length.
    private static readonly string[] s_adversarial = [.. Enumerable.Range(0, 2000).Select(i => $"/api/v1/users/{i:D6}/profile")];
    private static readonly string[] s_random = [.. Enumerable.Range(0, 2000).Select(i => "/" + Guid.NewGuid().ToString("N")[..25])];

    /// <summary>The 16 sets of <see cref="Add3Rotating"/>, each value a new string instance (as a request-built string is):
    /// 4,096 distinct instances per thread, so no reference comparison finds the series.</summary>
    private struct Add3Fresh(Counter<long> c, int thread) : IOperation
    {
        private readonly string[] _routes = [.. Enumerable.Range(0, 4096).Select(i => new string(s_routes16[i & 3].AsSpan()))];
        private readonly string[] _codes = [.. Enumerable.Range(0, 4096).Select(i => new string(s_codes16[(i >> 2) & 3].AsSpan()))];
        private int _i = thread;

        public void Invoke()
        {
            int i = _i++ & 4095;
            c.Add(1, s_tag1, new KeyValuePair<string, object?>("http.route", _routes[i]), new KeyValuePair<string, object?>("http.response.status_code", _codes[i]));
        }
    }

    /// <summary>The 16 sets with the status code as a boxed <see cref="int"/>, 4,096 distinct boxes per thread.</summary>
    private struct Add3Ints(Counter<long> c, int thread) : IOperation
    {
        private static readonly int[] s_status = [200, 201, 404, 500];
        private readonly object[] _codes = [.. Enumerable.Range(0, 4096).Select(i => (object)s_status[(i >> 2) & 3])];
        private int _i = thread;

        public void Invoke()
        {
            int i = _i++ & 4095;
            c.Add(1, s_tag1, new KeyValuePair<string, object?>("http.route", s_routes16[i & 3]), new KeyValuePair<string, object?>("http.response.status_code", _codes[i]));
        }
    }

    /// <summary>The 16 sets with the three tags in a different order on each call (three orders in turn).</summary>
    private struct Add3AnyOrder(Counter<long> c) : IOperation
    {
        private int _i;

        public void Invoke()
        {
            int i = _i++;
            var route = new KeyValuePair<string, object?>("http.route", s_routes16[i & 3]);
            var code = new KeyValuePair<string, object?>("http.response.status_code", s_codes16[(i >> 2) & 3]);
            switch (i % 3)
            {
                case 0:
                    c.Add(1, s_tag1, route, code);
                    break;
                case 1:
                    c.Add(1, code, s_tag1, route);
                    break;
                default:
                    c.Add(1, route, code, s_tag1);
                    break;
            }
        }
    }

    /// <summary>One tag whose value walks a list of 2,000 (the series exist after the first pass).</summary>
    private struct Add1Of(Counter<long> c, string[] values, int thread) : IOperation
    {
        private int _i = thread * 997;

        public void Invoke()
        {
            int i = _i++;
            c.Add(1, new KeyValuePair<string, object?>("http.route", values[(int)((uint)i % (uint)values.Length)]));
        }
    }

    private struct Record3(Histogram<double> h, double[] values) : IOperation
    {
        private int _i;

        public void Invoke() => h.Record(values[_i++ & 4095], s_tag1, s_tag2, s_tag3);
    }

    private readonly struct Increment(PerCpuCounter c) : IOperation
    {
        public void Invoke() => c.Increment();
    }

    private struct RecordBare(PerCpuHistogram h, double[] values) : IOperation
    {
        private int _i;

        public void Invoke() => h.Record(values[_i++ & 4095]);
    }
}
