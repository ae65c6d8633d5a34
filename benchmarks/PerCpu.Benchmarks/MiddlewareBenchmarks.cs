using BenchmarkDotNet.Attributes;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.Extensions.DependencyInjection;
using PerCpu.AspNetCore.Internal;

namespace PerCpu.Benchmarks;

/// <summary>
/// The middleware's own cost per request, without the network: <see cref="PerCpuMetricsMiddleware.Invoke"/> around a
/// pipeline that completes at once (baseline: calling that pipeline directly). And the scrape of 1000 series.
/// Results and machine: benchmarks/README.md.
/// </summary>
[MemoryDiagnoser]
public class MiddlewareBenchmarks
{
    internal static readonly RequestDelegate s_next = static _ => Task.CompletedTask;
    private PerCpuMetricsMiddleware _middleware = null!;
    private HttpMetricsStore _store = null!;
    private HttpMetricsStore _thousandSeries = null!;
    private DefaultHttpContext _context = null!;

    [GlobalSetup]
    public void Setup()
    {
        _store = new ServiceCollection().AddPerCpuMetrics().BuildServiceProvider().GetRequiredService<HttpMetricsStore>();
        _middleware = new PerCpuMetricsMiddleware(s_next, _store);
        _context = Context("/items/{id}", 200);

        // 1000 series: 100 routes x 10 status codes, every CPU slot recording.
        _thousandSeries = new ServiceCollection().AddPerCpuMetrics().BuildServiceProvider().GetRequiredService<HttpMetricsStore>();
        var fill = new PerCpuMetricsMiddleware(s_next, _thousandSeries);
        Parallel.For(0, 100, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount * 2 }, r =>
        {
            for (int s = 0; s < 10; s++)
            {
                DefaultHttpContext c = Context($"/route{r}/{{id}}", 200 + s);
                for (int i = 0; i < 50; i++)
                {
                    c.Features[typeof(IHttpMetricsTagsFeature)] = null; // a server gives each request its features afresh
                    _ = fill.Invoke(c);
                }
            }
        });
    }

    [Benchmark(Baseline = true)]
    public Task PipelineWithoutMetrics()
    {
        _context.Features[typeof(IHttpMetricsTagsFeature)] = null; // the same per-request reset as below
        return s_next(_context);
    }

    [Benchmark]
    public Task PipelineWithPerCpuMiddleware()
    {
        // A server gives each request its features afresh: without this, the reused context would keep the tags
        // feature PerCpu set, and the middleware would take every later call for a re-execution of the first.
        _context.Features[typeof(IHttpMetricsTagsFeature)] = null;
        return _middleware.Invoke(_context);
    }

    [Benchmark]
    public string ScrapeThousandSeriesText() => Exposition.WriteString(_thousandSeries, null, openMetrics: false);

    internal static DefaultHttpContext Context(string pattern, int status)
    {
        var context = new DefaultHttpContext();
        context.Request.Method = HttpMethods.Get;
        context.Request.Protocol = HttpProtocol.Http11;
        context.Response.StatusCode = status;
        context.SetEndpoint(new RouteEndpoint(s_next, RoutePatternFactory.Parse(pattern), 0, EndpointMetadataCollection.Empty, pattern));
        return context;
    }
}
