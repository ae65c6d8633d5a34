using System.Diagnostics.Metrics;
using BenchmarkDotNet.Attributes;

namespace PerCpu.Benchmarks;

/// <summary>
/// Single-thread cost of one counter update (no contention: that is the contention harness's job).
/// Baseline: one uncontended <see cref="Interlocked.Increment(ref long)"/>. Results and machine: benchmarks/README.md.
/// </summary>
[MemoryDiagnoser]
public class CounterBenchmarks
{
    private static readonly KeyValuePair<string, object?> s_tag1 = new("http.request.method", "GET");
    private static readonly KeyValuePair<string, object?> s_tag2 = new("http.route", "/items/{id}");
    private static readonly KeyValuePair<string, object?> s_tag3 = new("http.response.status_code", "200");
    private readonly PerCpuCounter _perCpu = new();
    private long _shared;
    private OtelPeer _otel = null!;
    private Counter<long> _otelCounter = null!;
    private Prometheus.Counter.Child _prom = null!;

    [GlobalSetup]
    public void Setup()
    {
        _otel = new OtelPeer("PerCpu.Benchmarks.Single");
        _otelCounter = _otel.Meter.CreateCounter<long>("requests");
        _prom = Prometheus.Metrics.CreateCounter("single_requests_total", "requests", "method", "route", "code").WithLabels("GET", "/items/{id}", "200");
    }

    [GlobalCleanup]
    public void Cleanup() => _otel.Dispose();

    [Benchmark(Baseline = true)]
    public long InterlockedIncrement() => Interlocked.Increment(ref _shared);

    [Benchmark]
    public void PerCpuCounterIncrement() => _perCpu.Increment();

    [Benchmark]
    public int ProcessorIdGetCurrentSlot() => ProcessorId.GetCurrentSlot();

    [Benchmark]
    public void OtelCounterAdd0Tags() => _otelCounter.Add(1);

    [Benchmark]
    public void OtelCounterAdd3Tags() => _otelCounter.Add(1, s_tag1, s_tag2, s_tag3);

    [Benchmark]
    public void PrometheusNetInc3Labels() => _prom.Inc();
}
