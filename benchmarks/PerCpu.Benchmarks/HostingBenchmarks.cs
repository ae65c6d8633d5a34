using BenchmarkDotNet.Attributes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;
using Prometheus;

namespace PerCpu.Benchmarks;

/// <summary>
/// The whole ASP.NET Core hosting pipeline per request, without sockets: a server that hands requests straight to the
/// app's <see cref="IHttpApplication{TContext}"/> (the object Kestrel drives: HttpContext creation, hosting diagnostics,
/// routing, the endpoint, context disposal). Variants: no metrics; PerCpu; ASP.NET Core's built-in metrics collected
/// by the OpenTelemetry SDK with its Prometheus exporter; prometheus-net's <c>UseHttpMetrics</c>. PerCpu runs twice:
/// with its default meters (it then also aggregates ASP.NET Core's routing and Kestrel instruments, as the
/// OpenTelemetry variant does) and with the request metrics alone. One request on one
/// thread, and requests from all cores at once. Results and machine: benchmarks/README.md.
/// </summary>
[MemoryDiagnoser]
public class HostingBenchmarks
{
    private const int RequestsPerInvoke = 4096;
    private WebApplication _app = null!;
    private DirectServer _server = null!;

    [Params("none", "percpu", "percpu-http-only", "otel-prometheus", "prometheus-net")]
    public string Variant { get; set; } = "none";

    [GlobalSetup]
    public void Setup()
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        _server = new DirectServer();
        builder.Services.AddSingleton<IServer>(_server);
        switch (Variant)
        {
            case "percpu":
                builder.Services.AddPerCpuMetrics(); // with its default meters: runtime, Kestrel, routing, diagnostics
                break;
            case "percpu-http-only":
                builder.Services.AddPerCpuMetrics(o => o.Meters.Clear()); // the request metrics alone
                break;
            case "otel-prometheus":
                builder.Services.AddOpenTelemetry().WithMetrics(m => m.AddAspNetCoreInstrumentation().AddPrometheusExporter());
                break;
        }

        _app = builder.Build();
        switch (Variant)
        {
            case "percpu" or "percpu-http-only":
                _app.UsePerCpuMetrics();
                _app.MapPerCpuMetrics();
                break;
            case "otel-prometheus":
                _app.MapPrometheusScrapingEndpoint();
                break;
            case "prometheus-net":
                _app.UseRouting();
                _app.UseHttpMetrics();
                _app.MapMetrics();
                break;
        }

        _app.MapGet("/items/{id:int}", static context =>
        {
            context.Response.StatusCode = 200;
            return Task.CompletedTask;
        });
        _app.StartAsync().GetAwaiter().GetResult();

        // Every variant must answer, and the metrics variants must expose the request on their scrape endpoint.
        int status = Send();
        if (status != 200)
        {
            throw new InvalidOperationException($"{Variant}: /items/42 answered {status}");
        }

        string? expected = Variant switch
        {
            "percpu" or "percpu-http-only" => "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/items/{id:int}\"",
            "otel-prometheus" => "http_server_request_duration_seconds_count{",
            "prometheus-net" => "http_requests_received_total{code=\"200\",method=\"GET\"",
            _ => null,
        };
        string scrape = Scrape();
        if (expected is not null && !scrape.Contains(expected, StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"{Variant}: the scrape does not show the request ({expected}):\n{scrape}");
        }
    }

    private string Scrape()
    {
        var features = new FeatureCollection();
        var body = new MemoryStream();
        features.Set<IHttpRequestFeature>(new HttpRequestFeature { Method = "GET", Path = "/metrics", Scheme = "http", Protocol = "HTTP/1.1" });
        features.Set<IHttpResponseFeature>(new HttpResponseFeature());
        features.Set<IHttpResponseBodyFeature>(new StreamResponseBodyFeature(body));
        _server.Process(features).GetAwaiter().GetResult();
        return System.Text.Encoding.UTF8.GetString(body.ToArray());
    }

    [GlobalCleanup]
    public void Cleanup() => _app.DisposeAsync().AsTask().GetAwaiter().GetResult();

    [Benchmark]
    public int OneRequest() => Send();

    [Benchmark(OperationsPerInvoke = RequestsPerInvoke)]
    public void AllCores()
    {
        int workers = Environment.ProcessorCount;
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, _ =>
        {
            for (int i = 0; i < RequestsPerInvoke / workers; i++)
            {
                _ = Send();
            }
        });
    }

    private int Send()
    {
        var features = new FeatureCollection();
        var request = new HttpRequestFeature { Method = "GET", Path = "/items/42", Scheme = "http", Protocol = "HTTP/1.1" };
        var response = new HttpResponseFeature();
        features.Set<IHttpRequestFeature>(request);
        features.Set<IHttpResponseFeature>(response);
        features.Set<IHttpResponseBodyFeature>(new StreamResponseBodyFeature(Stream.Null));
        _server.Process(features).GetAwaiter().GetResult();
        return response.StatusCode;
    }

    /// <summary>An <see cref="IServer"/> with no transport: requests are feature collections handed to the application.</summary>
    private sealed class DirectServer : IServer
    {
        private Func<IFeatureCollection, Task>? _process;

        public IFeatureCollection Features { get; } = new FeatureCollection();

        public Task Process(IFeatureCollection features) => _process!(features);

        public Task StartAsync<TContext>(IHttpApplication<TContext> application, CancellationToken cancellationToken)
            where TContext : notnull
        {
            _process = features => Run(application, features);
            return Task.CompletedTask;
        }

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public void Dispose()
        {
        }

        private static Task Run<TContext>(IHttpApplication<TContext> application, IFeatureCollection features)
            where TContext : notnull
        {
            TContext context = application.CreateContext(features);
            Task task;
            try
            {
                task = application.ProcessRequestAsync(context);
            }
            catch (Exception ex)
            {
                application.DisposeContext(context, ex);
                throw;
            }

            if (task.IsCompletedSuccessfully)
            {
                application.DisposeContext(context, null);
                return Task.CompletedTask;
            }

            return Awaited(application, context, task);
        }

        private static async Task Awaited<TContext>(IHttpApplication<TContext> application, TContext context, Task task)
            where TContext : notnull
        {
            try
            {
                await task.ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                application.DisposeContext(context, ex);
                throw;
            }

            application.DisposeContext(context, null);
        }
    }
}
