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
/// routing, the endpoint, context disposal), holding each request's features in typed slots and reusing them and the
/// hosting context from one request to the next, as Kestrel does on a keep-alive connection. Variants: no metrics; PerCpu; ASP.NET Core's built-in metrics collected
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

    /// <summary>The variants: all by default; <c>PERCPU_HOSTING_VARIANTS=none,percpu</c> picks some (a shorter run).</summary>
    public static IEnumerable<string> Variants =>
        Environment.GetEnvironmentVariable("PERCPU_HOSTING_VARIANTS")?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
        ?? ["none", "percpu", "percpu-http-only", "otel-prometheus", "prometheus-net"];

    [ParamsSource(nameof(Variants))]
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
            case "percpu-http-only-no-tags-feature":
                builder.Services.AddPerCpuMetrics(o =>
                {
                    o.Meters.Clear();
                    o.ProvideMetricsTagsFeature = false; // what providing IHttpMetricsTagsFeature costs
                });
                break;
            case "percpu-http-only-stopwatch":
                builder.Services.AddPerCpuMetrics(o =>
                {
                    o.Meters.Clear();
                    o.Clock = PerCpuClockSource.Stopwatch; // what the time-stamp counter saves, where it is the default
                });
                break;
            case "otel-prometheus":
                builder.Services.AddOpenTelemetry().WithMetrics(m => m.AddAspNetCoreInstrumentation().AddPrometheusExporter());
                break;
        }

        _app = builder.Build();
        switch (Variant)
        {
            case "percpu" or "percpu-http-only" or "percpu-http-only-no-tags-feature" or "percpu-http-only-stopwatch":
                _app.UsePerCpuMetrics();
                _app.MapPerCpuMetrics();
                break;
            case "otel-prometheus":
                _app.MapPrometheusScrapingEndpoint();
                break;
            case "floor":
                _app.Use(FloorMiddleware());
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
            "percpu" or "percpu-http-only" or "percpu-http-only-no-tags-feature" or "percpu-http-only-stopwatch" => "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/items/{id:int}\"",
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

    /// <summary>
    /// The reference of issue 23: a hand-written minimal request-metrics middleware on PerCpu.Core, what one would write
    /// knowing the library's instruments and nothing else: two <c>Stopwatch.GetTimestamp()</c> reads, active requests up
    /// and down, and one histogram per endpoint x method x status found in a cache (no labels, no exemplars, no
    /// re-execution or error handling, no scrape).
    /// </summary>
    private static Func<HttpContext, RequestDelegate, Task> FloorMiddleware()
    {
        var active = new PerCpuUpDownCounter();
        var histograms = new System.Collections.Concurrent.ConcurrentDictionary<(Endpoint?, int, int), PerCpuHistogram>();
        return (context, next) =>
        {
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            active.Increment();
            Task task = next(context);
            if (!task.IsCompletedSuccessfully)
            {
                throw new InvalidOperationException("the benchmark's endpoint completes synchronously");
            }

            active.Decrement();
            int method = ReferenceEquals(context.Request.Method, HttpMethods.Get) ? 0 : 1;
            PerCpuHistogram histogram = histograms.GetOrAdd((context.GetEndpoint(), method, context.Response.StatusCode), static _ => new PerCpuHistogram());
            histogram.RecordTicks(System.Diagnostics.Stopwatch.GetTimestamp() - start);
            return Task.CompletedTask;
        };
    }

    internal string Scrape()
    {
        var body = new MemoryStream();
        _server.Send("GET", "/metrics", body);
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

    /// <summary>One request to the benchmark's route; returns the status code.</summary>
    public int Send() => _server.Send("GET", "/items/42", null);

    /// <summary>
    /// An <see cref="IServer"/> with no transport that hands requests to the application as Kestrel does on a keep-alive
    /// connection: one connection per thread, whose features (typed slots, <see cref="ServerFeatures{TContext}"/>) and
    /// hosting context are reset and reused for each request.
    /// </summary>
    private sealed class DirectServer : IServer
    {
        private Func<string, string, Stream?, int>? _send;

        public IFeatureCollection Features { get; } = new FeatureCollection();

        /// <summary>One request, run to completion on this thread's connection; returns the status code.</summary>
        public int Send(string method, string path, Stream? body) => _send!(method, path, body);

        public Task StartAsync<TContext>(IHttpApplication<TContext> application, CancellationToken cancellationToken)
            where TContext : notnull
        {
            // One connection per thread and server: several apps in one process (HostingPaired) share no hosting context.
            var connections = new ThreadLocal<Connection<TContext>>(() => new Connection<TContext>());
            _send = (method, path, body) => connections.Value!.Send(application, method, path, body);
            return Task.CompletedTask;
        }

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public void Dispose()
        {
        }
    }

    /// <summary>A keep-alive connection: its features and response body are reused from one request to the next.</summary>
    private sealed class Connection<TContext>
        where TContext : notnull
    {
        private readonly ServerFeatures<TContext> _features = new();
        private readonly HttpRequestFeature _request = new();
        private readonly HttpResponseFeature _response = new();
        private readonly StreamResponseBodyFeature _nullBody = new(Stream.Null);

        public int Send(IHttpApplication<TContext> application, string method, string path, Stream? body)
        {
            _features.Reset();
            _request.Method = method;
            _request.Path = path;
            _request.Scheme = "http";
            _request.Protocol = "HTTP/1.1";
            _request.Headers.Clear();
            _response.StatusCode = 200;
            _response.ReasonPhrase = null;
            _response.Headers.Clear();
            _features.Set<IHttpRequestFeature>(_request);
            _features.Set<IHttpResponseFeature>(_response);
            _features.Set<IHttpResponseBodyFeature>(body is null ? _nullBody : new StreamResponseBodyFeature(body));
            TContext context = application.CreateContext(_features);
            try
            {
                application.ProcessRequestAsync(context).GetAwaiter().GetResult();
            }
            catch (Exception ex)
            {
                application.DisposeContext(context, ex);
                throw;
            }

            application.DisposeContext(context, null);
            return _response.StatusCode;
        }
    }
}
