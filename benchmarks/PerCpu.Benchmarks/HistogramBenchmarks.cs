using System.Diagnostics.Metrics;
using BenchmarkDotNet.Attributes;

namespace PerCpu.Benchmarks;

/// <summary>
/// Single-thread cost of one histogram record (log-normal latencies, cycled), and the cost of a snapshot of one
/// histogram whose every CPU slot holds a populated shard. Results and machine: benchmarks/README.md.
/// </summary>
[MemoryDiagnoser]
public class HistogramBenchmarks
{
    private static readonly KeyValuePair<string, object?> s_tag1 = new("http.request.method", "GET");
    private static readonly KeyValuePair<string, object?> s_tag2 = new("http.route", "/items/{id}");
    private static readonly KeyValuePair<string, object?> s_tag3 = new("http.response.status_code", "200");
    private readonly double[] _values = HistogramCases.Latencies(1);
    private readonly PerCpuHistogram _perCpu = new();
    private readonly PerCpuHistogram _populated = new();
    private OtelPeer _otel = null!;
    private Histogram<double> _otelHistogram = null!;
    private Prometheus.Histogram _prom = null!;
    private int _i;

    [GlobalSetup]
    public void Setup()
    {
        _otel = new OtelPeer("PerCpu.Benchmarks.SingleHistogram");
        _otelHistogram = _otel.Meter.CreateHistogram<double>("duration", "s", null, null, new InstrumentAdvice<double> { HistogramBucketBoundaries = HistogramLayout.AspNetCoreRequestDurationBoundaries });
        _prom = Prometheus.Metrics.CreateHistogram("single_duration_seconds", "d", new Prometheus.HistogramConfiguration { Buckets = [.. HistogramLayout.AspNetCoreRequestDurationBoundaries] });

        // Populate every slot: threads record until each slot has a shard (or a time limit passes).
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (_populated.ShardCount < ProcessorId.SlotCount && DateTime.UtcNow < deadline)
        {
            Parallel.For(0, Environment.ProcessorCount * 4, t =>
            {
                foreach (double v in _values)
                {
                    _populated.Record(v);
                }
            });
        }
    }

    [GlobalCleanup]
    public void Cleanup() => _otel.Dispose();

    [Benchmark(Baseline = true)]
    public void PerCpuHistogramRecord() => _perCpu.Record(_values[_i++ & 4095]);

    [Benchmark]
    public void PerCpuHistogramRecordTicks() => _perCpu.RecordTicks((long)(_values[_i++ & 4095] * 1e9));

    [Benchmark]
    public void OtelHistogramRecord3Tags() => _otelHistogram.Record(_values[_i++ & 4095], s_tag1, s_tag2, s_tag3);

    [Benchmark]
    public void PrometheusNetObserve() => _prom.Observe(_values[_i++ & 4095]);

    [Benchmark]
    public HistogramSnapshot SnapshotAllSlotsPopulated() => _populated.Snapshot();
}
