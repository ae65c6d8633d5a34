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
        cases.Add(new OperationCase<Record3>(PerCpuRecord3, t => new Record3(perCpuHistogram, HistogramCases.Latencies(t)), observed: () => (long)Total("duration")));

        s_otel ??= new OtelPeer("PerCpu.Benchmarks.MeterApi.Otel");
        Counter<long> otel0 = s_otel.Meter.CreateCounter<long>("requests0");
        Counter<long> otel3 = s_otel.Meter.CreateCounter<long>("requests3");
        Histogram<double> otelHistogram = s_otel.Meter.CreateHistogram("duration", "s", null, null, new InstrumentAdvice<double> { HistogramBucketBoundaries = HistogramLayout.AspNetCoreRequestDurationBoundaries });
        cases.Add(new OperationCase<Add0>(OtelAdd0, _ => new Add0(otel0)));
        cases.Add(new OperationCase<Add3>(OtelAdd3, _ => new Add3(otel3)));
        Counter<long> otelRotating = s_otel.Meter.CreateCounter<long>("requests3rotating");
        cases.Add(new OperationCase<Add3Rotating>(OtelAdd3Rotating, _ => new Add3Rotating(otelRotating)));
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
