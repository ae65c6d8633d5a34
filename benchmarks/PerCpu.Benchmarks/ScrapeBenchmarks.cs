using BenchmarkDotNet.Attributes;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using PerCpu.AspNetCore.Internal;

namespace PerCpu.Benchmarks;

/// <summary>
/// Rendering the scrape of N request-duration series (15 classic buckets each, every CPU slot recording): time, and
/// allocation. The text goes as UTF-8 into pooled chunks; what a scrape allocates grows with the number of families and
/// layouts, not of series. Results and machine: benchmarks/README.md.
/// </summary>
[MemoryDiagnoser]
public class ScrapeBenchmarks
{
    private HttpMetricsStore _store = null!;

    [Params(1_000, 10_000)]
    public int Series { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _store = new ServiceCollection().AddPerCpuMetrics(o => o.MaxSeriesPerMetric = 20_000).BuildServiceProvider().GetRequiredService<HttpMetricsStore>();
        var fill = new PerCpuMetricsMiddleware(MiddlewareBenchmarks.s_next, _store);
        int routes = Series / 10;
        Parallel.For(0, routes, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount * 2 }, r =>
        {
            for (int s = 0; s < 10; s++)
            {
                DefaultHttpContext c = MiddlewareBenchmarks.Context($"/route{r}/{{id}}", 200 + s);
                for (int i = 0; i < 5; i++)
                {
                    c.Features[typeof(IHttpMetricsTagsFeature)] = null; // a server gives each request its features afresh
                    _ = fill.Invoke(c);
                }
            }
        });
        if (_store.SeriesCount != Series)
        {
            throw new InvalidOperationException($"{_store.SeriesCount} series, expected {Series}");
        }

        _ = ScrapeText(); // label texts built once, as after the first scrape
    }

    /// <summary>What the scrape endpoint does: UTF-8 into pooled 64 KB chunks, returned to the pool afterwards.</summary>
    [Benchmark]
    public long ScrapeText()
    {
        var output = new ChunkWriter();
        Exposition.Write(output, _store, null, openMetrics: false);
        long bytes = 0;
        foreach ((byte[] chunk, int length) in output.Complete())
        {
            bytes += length;
            if (chunk.Length == ChunkWriter.ChunkSize)
            {
                ChunkWriter.Pool.Return(chunk);
            }
        }

        return bytes;
    }
}
