using System.Diagnostics;
using BenchmarkDotNet.Attributes;

namespace PerCpu.Benchmarks;

/// <summary>
/// What exemplars cost a histogram record: the plain record, the record given no activity or an unsampled one (the one
/// check the request path pays when it is not traced), and the record under a sampled activity (the exemplar store:
/// one uncontended compare-and-swap, the wall clock, the ids). Results and machine: benchmarks/README.md.
/// </summary>
[MemoryDiagnoser]
public class ExemplarBenchmarks
{
    private readonly double[] _values = HistogramCases.Latencies(1);
    private readonly PerCpuHistogram _histogram = new();
    private Activity _sampled = null!;
    private Activity _unsampled = null!;
    private int _i;

    [GlobalSetup]
    public void Setup()
    {
        _sampled = NewActivity(ActivityTraceFlags.Recorded);
        _unsampled = NewActivity(ActivityTraceFlags.None);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _sampled.Dispose();
        _unsampled.Dispose();
    }

    [Benchmark(Baseline = true)]
    public void RecordTicks() => _histogram.RecordTicks(Ticks());

    [Benchmark]
    public void RecordTicksNoActivity() => _histogram.RecordTicks(Ticks(), (Activity?)null);

    [Benchmark]
    public void RecordTicksUnsampledActivity() => _histogram.RecordTicks(Ticks(), _unsampled);

    [Benchmark]
    public void RecordTicksSampledActivity() => _histogram.RecordTicks(Ticks(), _sampled);

    private long Ticks() => (long)(_values[_i++ & 4095] * Stopwatch.Frequency);

    private static Activity NewActivity(ActivityTraceFlags flags)
    {
        var a = new Activity("benchmark");
        a.SetIdFormat(ActivityIdFormat.W3C);
        a.ActivityTraceFlags = flags;
        a.Start();
        _ = a.TraceId; // the ids are computed once per activity, as for a request's
        _ = a.SpanId;
        a.Stop();
        Activity.Current = null;
        return a;
    }
}
