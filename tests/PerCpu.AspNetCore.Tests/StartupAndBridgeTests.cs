using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using PerCpu.AspNetCore.Internal;

namespace PerCpu.AspNetCore.Tests;

public sealed class StartupAndBridgeTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static TheoryData<string, string> BadOptions => new()
    {
        { "boundaries-order", "PerCpuMetricsOptions.DurationBoundaries must be strictly increasing" },
        { "boundaries-range", "PerCpuMetricsOptions.DurationBoundaries[0]" },
        { "cap", "PerCpuMetricsOptions.MaxSeriesPerMetric" },
        { "label-length", "PerCpuMetricsOptions.MaxLabelValueLength" },
        { "budget", "PerCpuMetricsOptions.ObservableCallbackBudget" },
        { "scrapes", "PerCpuMetricsOptions.MaxConcurrentScrapes" },
        { "scrape-timeout", "PerCpuMetricsOptions.ScrapeTimeout" },
        { "window", "PerCpuMetricsOptions.RateWindowsSeconds" },
        { "scale", "PerCpuMetricsOptions.HistogramScale" },
    };

    [Theory]
    [MemberData(nameof(BadOptions))]
    public async Task InvalidOptions_FailStartup_NamingTheOptionAndTheFix(string which, string expected)
    {
        OptionsValidationException ex = await Assert.ThrowsAsync<OptionsValidationException>(async () =>
        {
            await using TestApp app = await TestApp.StartAsync(o =>
            {
                switch (which)
                {
                    case "boundaries-order": o.DurationBoundaries = [0.1, 0.05]; break;
                    case "boundaries-range": o.DurationBoundaries = [-1]; break;
                    case "cap": o.MaxSeriesPerMetric = 0; break;
                    case "label-length": o.MaxLabelValueLength = 5; break;
                    case "budget": o.ObservableCallbackBudget = TimeSpan.Zero; break;
                    case "scrapes": o.MaxConcurrentScrapes = 0; break;
                    case "scrape-timeout": o.ScrapeTimeout = TimeSpan.FromHours(1); break;
                    case "window": o.RateWindowsSeconds = [10, 0]; break;
                    default: o.HistogramScale = 12; break;
                }
            });
        });

        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("metrics")]
    [InlineData("/metrics/{")]
    [InlineData("")]
    public void MapPerCpuMetrics_InvalidPattern_ThrowsWithTheFix(string pattern)
    {
        WebApplicationBuilder b = WebApplication.CreateSlimBuilder();
        b.Services.AddPerCpuMetrics();
        WebApplication app = b.Build();

        ArgumentException ex = Assert.Throws<ArgumentException>(() => app.MapPerCpuMetrics(pattern));
        Assert.Contains("MapPerCpuMetrics pattern", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task MapPerCpuMetrics_ReturnsConventionBuilder_RequireHostApplies()
    {
        WebApplicationBuilder b = WebApplication.CreateSlimBuilder();
        b.WebHost.UseUrls("http://127.0.0.1:0");
        b.Services.AddPerCpuMetrics();
        await using WebApplication app = b.Build();
        app.UsePerCpuMetrics();
        app.MapPerCpuMetrics("/internal/metrics").RequireHost("metrics.internal");
        await app.StartAsync(Ct);
        using var client = new HttpClient { BaseAddress = new Uri(app.Urls.First()) };

        using HttpResponseMessage wrongHost = await client.GetAsync("/internal/metrics", Ct);
        using var right = new HttpRequestMessage(HttpMethod.Get, "/internal/metrics");
        right.Headers.Host = "metrics.internal";
        using HttpResponseMessage rightHost = await client.SendAsync(right, Ct);

        Assert.Equal(System.Net.HttpStatusCode.NotFound, wrongHost.StatusCode);
        Assert.Equal(System.Net.HttpStatusCode.OK, rightHost.StatusCode);
        await app.StopAsync(Ct);
    }

    [Fact]
    public async Task Rates_DrivenByTimeProvider_WindowedAndEwma()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UnixEpoch);
        await using TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddSingleton<TimeProvider>(time));

        await Requests(app, 10);
        time.Advance(TimeSpan.FromSeconds(1));
        Scrape s1 = await app.ScrapeAsync();
        Assert.Equal(10, Rate(s1, "1s"));
        Assert.Equal(1, Rate(s1, "10s"));
        Assert.Equal(10.0 / 60, Rate(s1, "60s"), 9);
        Assert.Equal(10, Rate(s1, "ewma_1m"));
        Assert.Equal(10, RouteRate(s1, "/items/{id:int}", "1s"));

        await Requests(app, 20);
        time.Advance(TimeSpan.FromSeconds(1));
        Scrape s2 = await app.ScrapeAsync();
        Assert.Equal(20, Rate(s2, "1s"));
        Assert.Equal(3, Rate(s2, "10s"));
        Assert.Equal(10 + ((1 - Math.Exp(-1.0 / 60)) * 10), Rate(s2, "ewma_1m"), 9);
        Assert.Equal(10 + ((1 - Math.Exp(-1.0 / 900)) * 10), Rate(s2, "ewma_15m"), 9);

        time.Advance(TimeSpan.FromSeconds(60));
        Scrape s3 = await app.ScrapeAsync();
        Assert.Equal(0, Rate(s3, "1s"));
        Assert.Equal(0, Rate(s3, "60s"));
        Assert.InRange(Rate(s3, "ewma_1m"), 0.1, 10.17 * Math.Exp(-59.0 / 60));

        static double Rate(Scrape s, string window) => s.Named(Exposition.Rate).Single(x => x.Labels["window"] == window).Value;
        static double RouteRate(Scrape s, string route, string window) => s.Named(Exposition.RouteRate).Single(x => x.Labels["window"] == window && x.Labels.GetValueOrDefault("http_route") == route).Value;
    }

    [Fact]
    public async Task Rates_RouteFirstSeenLater_EwmaStartsAtZero_AndRoutesAddUpToTheTotal()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UnixEpoch);
        await using TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddSingleton<TimeProvider>(time));
        await Requests(app, 10);
        for (int s = 0; s < 5; s++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
        }

        // A route first seen now: 3 requests in one second.
        for (int i = 0; i < 3; i++)
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/status/202", TestContext.Current.CancellationToken);
        }

        time.Advance(TimeSpan.FromSeconds(1));
        Scrape scrape = await app.ScrapeAsync();
        double alpha15 = 1 - Math.Exp(-1.0 / 900);
        Assert.Equal(3 * alpha15, RouteRate(scrape, "/status/{code:int}", "ewma_15m"), 12); // not 3: it starts from 0
        foreach (string window in new[] { "ewma_1m", "ewma_5m", "ewma_15m", "1s", "10s", "60s" })
        {
            double routes = scrape.Named(Exposition.RouteRate).Where(x => x.Labels["window"] == window).Sum(x => x.Value);
            Assert.Equal(scrape.Named(Exposition.Rate).Single(x => x.Labels["window"] == window).Value, routes, 9);
        }

        static double RouteRate(Scrape s, string route, string window) => s.Named(Exposition.RouteRate).Single(x => x.Labels["window"] == window && x.Labels.GetValueOrDefault("http_route") == route).Value;
    }

    [Fact]
    public async Task MeterBridge_MeterListenerSeesTheSameNumbersAsTheScrape()
    {
        await using TestApp app = await TestApp.StartAsync();
        await ExpositionTests.Traffic(app);
        await Requests(app, 25);
        IMeterFactory factory = app.App.Services.GetRequiredService<IMeterFactory>();
        using var counts = new MetricCollector<long>(factory, MeterBridge.MeterName, "http.server.request.duration.count");
        using var buckets = new MetricCollector<long>(factory, MeterBridge.MeterName, "http.server.request.duration.bucket");
        using var sums = new MetricCollector<double>(factory, MeterBridge.MeterName, "http.server.request.duration.sum");

        counts.RecordObservableInstruments();
        buckets.RecordObservableInstruments();
        sums.RecordObservableInstruments();
        Scrape scrape = await app.ScrapeAsync(); // the scrape itself is excluded, so the numbers cannot move between the two reads

        var scraped = scrape.CountsByRouteMethodStatus();
        var observed = counts.GetMeasurementSnapshot().ToDictionary(
            m => $"{Scrape.RouteOf(m.Tags)} {m.Tags["http.request.method"]} {m.Tags["http.response.status_code"]}{(m.Tags.TryGetValue("error.type", out object? e) ? " " + e : "")}",
            m => (double)m.Value);
        Assert.Equal(scraped.OrderBy(p => p.Key), observed.OrderBy(p => p.Key));
        Assert.Equal(scrape.Named("http_server_request_duration_seconds_bucket").Sum(s => s.Value), buckets.GetMeasurementSnapshot().Sum(m => m.Value));
        Assert.Equal(scrape.Named("http_server_request_duration_seconds_sum").Sum(s => s.Value), sums.GetMeasurementSnapshot().Sum(m => m.Value), 9);

        // The strategy gauge carries the same labels on both paths.
        using var strategy = new MetricCollector<double>(factory, MeterBridge.MeterName, "percpu.processor_id.strategy");
        strategy.RecordObservableInstruments();
        CollectedMeasurement<double> observedStrategy = Assert.Single(strategy.GetMeasurementSnapshot());
        Scrape.Sample scrapedStrategy = Assert.Single(scrape.Named("percpu_processor_id_strategy"));
        Assert.Equal(scrapedStrategy.Labels["strategy"], observedStrategy.Tags["strategy"]);
        Assert.Equal(scrapedStrategy.Labels["slots"], Convert.ToString(observedStrategy.Tags["slots"], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(scrapedStrategy.Labels["write_path"], observedStrategy.Tags["write_path"]);

        // One instrument per family of the HTTP producer, the route rates included.
        using var routeRates = new MetricCollector<double>(factory, MeterBridge.MeterName, "percpu.http.server.route_request_rate");
        routeRates.RecordObservableInstruments();
        Assert.Equal(
            scrape.Named(Exposition.RouteRate).Select(s => $"{Scrape.RouteOf(s.Labels)} {s.Labels["window"]}").Order(),
            routeRates.GetMeasurementSnapshot().Select(m => $"{Scrape.RouteOf(m.Tags)} {m.Tags["window"]}").Order());
        using var failures = new MetricCollector<long>(factory, MeterBridge.MeterName, "percpu.recording_failures");
        failures.RecordObservableInstruments();
        Assert.Equal(0, Assert.Single(failures.GetMeasurementSnapshot()).Value);
    }

    [Fact]
    public void Middleware_SynchronousPipeline_AllocatesNothingPerRequest()
    {
        ServiceProvider services = new ServiceCollection().AddPerCpuMetrics().BuildServiceProvider();
        HttpMetricsStore store = services.GetRequiredService<HttpMetricsStore>();
        var middleware = new PerCpuMetricsMiddleware(static ctx => Task.CompletedTask, store);
        var endpoint = new RouteEndpoint(static _ => Task.CompletedTask, RoutePatternFactory.Parse("/items/{id}"), 0, EndpointMetadataCollection.Empty, "items");
        var context = new DefaultHttpContext();
        context.Request.Method = HttpMethods.Get;
        context.Request.Protocol = HttpProtocol.Http11;
        context.Response.StatusCode = 200;
        context.SetEndpoint(endpoint);

        Run(1_000); // creates the series and this CPU's shards
        long before = GC.GetAllocatedBytesForCurrentThread();
        Run(20_000);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        // A histogram shard (2 KiB) or counter cell may still appear if the thread moves to a CPU it has not written from.
        Assert.True(allocated <= 4 * 2_048 * ProcessorId.SlotCount, $"{allocated} bytes for 20k requests");
        Assert.Equal(21_000, store.ForEndpoint(endpoint).GetSeries(EndpointMetrics.Pack(1, 100, 0, 2, 0)).Duration.Snapshot().Count);

        void Run(int n)
        {
            for (int i = 0; i < n; i++)
            {
                context.Features[typeof(IHttpMetricsTagsFeature)] = null; // as a server gives each request its features afresh
                _ = middleware.Invoke(context);
            }
        }
    }

    private static async Task Requests(TestApp app, int n)
    {
        for (int i = 0; i < n; i++)
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/items/" + i, Ct);
        }
    }
}
