using System.Diagnostics.Metrics;
using Prometheus;

namespace PerCpu.Benchmarks;

/// <summary>Counter cases: the shared-atomic baseline, the thread-local floor, PerCpu under each strategy, the peers.</summary>
internal static class CounterCases
{
    private static readonly KeyValuePair<string, object?> s_tag1 = new("http.request.method", "GET");
    private static readonly KeyValuePair<string, object?> s_tag2 = new("http.route", "/items/{id}");
    private static readonly KeyValuePair<string, object?> s_tag3 = new("http.response.status_code", "200");
    private static OtelPeer? s_otel;

    public const string Shared = "Interlocked.Increment, one shared long";
    public const string Floor = "thread-local plain ++ (floor, not readable)";
    public const string PerCpuAuto = "PerCpuCounter.Increment (auto)";
    public const string Otel0 = "OTel SDK Counter<long>.Add, 0 tags";
    public const string Otel3 = "OTel SDK Counter<long>.Add, 3 tags";
    public const string Prom0 = "prometheus-net Counter.Inc, 0 labels";
    public const string Prom3 = "prometheus-net Counter.Inc, 3 labels";

    public static void Add(List<Case> cases, List<(string, string, string)> ratios)
    {
        ProcessorIdStrategy auto = ProcessorId.Strategy;
        var shared = new SharedCell();
        cases.Add(new OperationCase<SharedIncrement>(Shared, _ => new SharedIncrement(shared), observed: () => Volatile.Read(ref shared.Value)));
        cases.Add(new OperationCase<ThreadLocalIncrement>(Floor, _ => default));

        var perCpu = new PerCpuCounter();
        cases.Add(new OperationCase<PerCpuIncrement>($"{PerCpuAuto}", _ => new PerCpuIncrement(perCpu), () => SetStrategy(auto), perCpu.Sum));
        foreach (ProcessorIdCandidate c in ProcessorId.Selection.Candidates.Where(c => c.Available && c.Strategy != auto))
        {
            var counter = new PerCpuCounter();
            ProcessorIdStrategy s = c.Strategy;
            cases.Add(new OperationCase<PerCpuIncrement>($"PerCpuCounter.Increment ({s})", _ => new PerCpuIncrement(counter), () => SetStrategy(s), counter.Sum));
        }

        cases.Add(new OperationCase<ReadId>("ProcessorId.GetCurrentId (auto)", _ => default, () => SetStrategy(auto)));
        cases.Add(new OperationCase<ReadSlot>("ProcessorId.GetCurrentSlot (auto)", _ => default, () => SetStrategy(auto)));

        s_otel ??= new OtelPeer("PerCpu.Benchmarks.Counters");
        Counter<long> otel = s_otel.Meter.CreateCounter<long>("requests");
        cases.Add(new OperationCase<OtelAdd0>(Otel0, _ => new OtelAdd0(otel), () => SetStrategy(auto)));
        cases.Add(new OperationCase<OtelAdd3>(Otel3, _ => new OtelAdd3(otel), () => SetStrategy(auto)));

        Prometheus.Counter prom0 = Metrics.CreateCounter("bench_requests_total", "requests");
        Prometheus.Counter prom3 = Metrics.CreateCounter("bench_requests_labelled_total", "requests", "method", "route", "code");
        cases.Add(new OperationCase<PromInc>(Prom0, _ => new PromInc(prom0), () => SetStrategy(auto)));
        cases.Add(new OperationCase<PromInc>(Prom3, _ => new PromInc(prom3.WithLabels("GET", "/items/{id}", "200")), () => SetStrategy(auto)));

        ratios.Add(("PerCpu (auto) / shared Interlocked", PerCpuAuto, Shared));
        ratios.Add(("PerCpu (auto) / OTel SDK, 0 tags", PerCpuAuto, Otel0));
        ratios.Add(("PerCpu (auto) / OTel SDK, 3 tags", PerCpuAuto, Otel3));
        ratios.Add(("PerCpu (auto) / prometheus-net, 3 labels", PerCpuAuto, Prom3));
        ratios.Add(("PerCpu (auto) / thread-local floor", PerCpuAuto, Floor));
    }

    private static void SetStrategy(ProcessorIdStrategy s)
    {
        if (ProcessorId.Strategy != s && !ProcessorId.TrySetStrategy(s, out string? why))
        {
            throw new InvalidOperationException(why);
        }
    }

    private static class Sink
    {
        [ThreadStatic]
        public static int Value;
    }

    internal sealed class SharedCell
    {
        public long Value;
    }

    private readonly struct SharedIncrement(SharedCell cell) : IOperation
    {
        public void Invoke() => Interlocked.Increment(ref cell.Value);
    }

    private readonly struct ThreadLocalIncrement : IOperation
    {
        [ThreadStatic]
        private static long t_count;

        public void Invoke() => t_count++;
    }

    private readonly struct PerCpuIncrement(PerCpuCounter counter) : IOperation
    {
        public void Invoke() => counter.Increment();
    }

    private readonly struct ReadId : IOperation
    {
        public void Invoke() => Volatile.Write(ref Sink.Value, ProcessorId.GetCurrentId());
    }

    private readonly struct ReadSlot : IOperation
    {
        public void Invoke() => Volatile.Write(ref Sink.Value, ProcessorId.GetCurrentSlot());
    }

    private readonly struct OtelAdd0(Counter<long> counter) : IOperation
    {
        public void Invoke() => counter.Add(1);
    }

    private readonly struct OtelAdd3(Counter<long> counter) : IOperation
    {
        public void Invoke() => counter.Add(1, s_tag1, s_tag2, s_tag3);
    }

    private readonly struct PromInc(Prometheus.ICounter counter) : IOperation
    {
        public void Invoke() => counter.Inc();
    }
}

/// <summary>Cases for choosing the padding: two threads hammer two cells a given distance apart.</summary>
internal static class StrideCases
{
    public static void Add(List<Case> cases)
    {
        foreach (int bytes in new[] { 8, 64, 128, 256 })
        {
            long[] cells = new long[(2 * 256 / 8) + 64];
            int stride = bytes / 8;
            cases.Add(new OperationCase<StrideIncrement>($"two cells {bytes} B apart", t => new StrideIncrement(cells, 32 + ((t % 2) * stride))));
        }
    }

    private readonly struct StrideIncrement(long[] cells, int index) : IOperation
    {
        public void Invoke() => Interlocked.Increment(ref cells[index]);
    }
}
