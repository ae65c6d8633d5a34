using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using PerCpu.Families;

namespace PerCpu.AspNetCore.Tests;

/// <summary>The app's own metrics (Meter API and labelled families) and the runtime's, on /metrics next to PerCpu's.</summary>
public sealed class AppMetricsTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static string UniqueMeter() => "Shop" + Guid.NewGuid().ToString("N")[..8];

    [Fact]
    public async Task MeasurementsBeforeTheHostStarts_ShowOnTheFirstScrape()
    {
        string meterName = UniqueMeter();
        WebApplicationBuilder b = WebApplication.CreateSlimBuilder();
        b.WebHost.UseUrls("http://127.0.0.1:0");
        b.Logging.ClearProviders();
        // Registered before AddPerCpuMetrics: its constructor runs before PerCpu's own hosted service is created.
        b.Services.AddHostedService(sp => new CountsInItsConstructor(sp.GetRequiredService<IMeterFactory>(), meterName));
        b.Services.AddPerCpuMetrics(o => o.Meters.Add(meterName));
        await using WebApplication app = b.Build();

        // After Build(), before the host starts: a service made through IMeterFactory records at once.
        Meter meter = app.Services.GetRequiredService<IMeterFactory>().Create(meterName);
        meter.CreateCounter<long>("early.orders").Add(7);
        app.UsePerCpuMetrics();
        meter.CreateCounter<long>("early.after_use").Add(3);
        app.MapPerCpuMetrics();
        await app.StartAsync(Ct);
        try
        {
            string address = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>().Features
                .Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()!.Addresses.First();
            using var client = new HttpClient { BaseAddress = new Uri(address) };
            Scrape scrape = Scrape.Parse(await client.GetStringAsync("/metrics", Ct));
            Assert.Equal(7, Assert.Single(scrape.Named("early_orders_total")).Value);
            Assert.Equal(3, Assert.Single(scrape.Named("early_after_use_total")).Value);
            Assert.Equal(5, Assert.Single(scrape.Named("early_constructor_total")).Value);
        }
        finally
        {
            await app.StopAsync(Ct);
        }
    }

    [Fact]
    public async Task AnInstrumentWithAnInvalidName_IsLoggedAsAWarning()
    {
        string meterName = UniqueMeter();
        await using TestApp app = await TestApp.StartAsync(o => o.Meters.Add(meterName), b => b.Logging.AddFakeLogging());
        Meter meter = app.App.Services.GetRequiredService<IMeterFactory>().Create(meterName);
        meter.CreateCounter<long>("bad name").Add(1);
        FakeLogRecord warning = Assert.Single(
            app.App.Services.GetFakeLogCollector().GetSnapshot(),
            r => r.Level == LogLevel.Warning && r.Id.Name == "MeterListenerWarning");
        Assert.Contains("'bad name'", warning.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("bad_name", (await app.ScrapeAsync()).Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnObservableCallbackThatBlocks_TheScrapeStillAnswersWithEverythingElse()
    {
        string meterName = UniqueMeter();
        using var gate = new ManualResetEventSlim();
        await using TestApp app = await TestApp.StartAsync(
            o =>
            {
                o.Meters.Add(meterName);
                o.ObservableCallbackBudget = TimeSpan.FromSeconds(2); // the first, quick run completes even on a loaded machine
            },
            b => b.Logging.AddFakeLogging());
        Meter meter = app.App.Services.GetRequiredService<IMeterFactory>().Create(meterName);
        int calls = 0;
        meter.CreateObservableGauge("blocking.gauge", () =>
        {
            if (Interlocked.Increment(ref calls) > 1)
            {
                gate.Wait(TimeSpan.FromSeconds(60));
            }

            return 7L;
        });
        meter.CreateCounter<long>("still.counted").Add(5);
        try
        {
            Assert.Equal(7, Assert.Single((await app.ScrapeAsync()).Named("blocking_gauge")).Value);
            using HttpResponseMessage r = await app.Client.GetAsync("/items/1", Ct);
            for (int i = 0; i < 3; i++)
            {
                Scrape scrape = await app.ScrapeAsync(); // each answers while the callback blocks
                Assert.False(gate.IsSet);
                Assert.Equal(7, Assert.Single(scrape.Named("blocking_gauge")).Value);
                Assert.Equal(5, Assert.Single(scrape.Named("still_counted_total")).Value);
                Assert.Equal(1, scrape.Named("http_server_request_duration_seconds_count").Sum(s => s.Value));
            }

            Assert.Contains(app.App.Services.GetFakeLogCollector().GetSnapshot(), l => l.Level == LogLevel.Warning && l.Message.Contains("'blocking.gauge'", StringComparison.Ordinal));
        }
        finally
        {
            gate.Set();
        }
    }

    [Fact]
    public async Task AFamilyLeftOutForANameConflict_IsLoggedOnceNamingIt_AndCountedInEveryScrape()
    {
        string meterName = UniqueMeter();
        await using TestApp app = await TestApp.StartAsync(o => o.Meters.Add(meterName), b => b.Logging.AddFakeLogging());
        Meter meter = app.App.Services.GetRequiredService<IMeterFactory>().Create(meterName);
        meter.CreateCounter<long>("clash").Add(3); // exposed as clash_total
        meter.CreateGauge<long>("clash_total").Record(9);
        for (int i = 0; i < 3; i++)
        {
            Scrape scrape = await app.ScrapeAsync();
            Assert.Equal(3, Assert.Single(scrape.Named("clash_total")).Value);
            Assert.Equal(1, Assert.Single(scrape.Named("percpu_metric_name_conflicts_total")).Value);
        }

        FakeLogRecord warning = Assert.Single(app.App.Services.GetFakeLogCollector().GetSnapshot(), r => r.Id.Name == "MetricNameConflict");
        Assert.Equal(LogLevel.Warning, warning.Level);
        Assert.Contains("Gauge 'clash_total'", warning.Message, StringComparison.Ordinal);
    }

    private sealed class CountsInItsConstructor : Microsoft.Extensions.Hosting.IHostedService
    {
        public CountsInItsConstructor(IMeterFactory meters, string meterName) =>
            meters.Create(meterName).CreateCounter<long>("early.constructor").Add(5);

        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    [Fact]
    public async Task MeterApi_ManyMoreThreadsThanCores_ExactPerTagSetOnTheScrape()
    {
        string meterName = UniqueMeter();
        await using TestApp app = await TestApp.StartAsync(o => o.Meters.Add(meterName));
        Meter meter = app.App.Services.GetRequiredService<IMeterFactory>().Create(meterName);
        Counter<long> orders = meter.CreateCounter<long>("shop.orders", "{order}", "Orders placed.");
        Histogram<double> checkout = meter.CreateHistogram<double>("shop.checkout.duration", "s", "Checkout duration.");
        UpDownCounter<long> carts = meter.CreateUpDownCounter<long>("shop.carts.open", "{cart}");
        meter.CreateObservableGauge("shop.stock", () => new Measurement<long>(42, new KeyValuePair<string, object?>("warehouse", "north")), "{item}");

        const int Threads = 16, PerThread = 25_000;
        string[] regions = ["eu", "us", "apac", "latam"];
        await Task.WhenAll(Enumerable.Range(0, Threads).Select(t => Task.Factory.StartNew(() =>
        {
            var region = new KeyValuePair<string, object?>("region", regions[t % 4]);
            var payment = new KeyValuePair<string, object?>("payment.method", t % 2 == 0 ? "card" : "cash");
            for (int i = 0; i < PerThread; i++)
            {
                orders.Add(1, region, payment);
                checkout.Record(0.03, payment, region);
                carts.Add(1, region);
                carts.Add(-1, region);
            }
        }, Ct, TaskCreationOptions.LongRunning, TaskScheduler.Default)));

        Scrape scrape = await app.ScrapeAsync();
        foreach (string region in regions)
        {
            foreach (string payment in new[] { "card", "cash" })
            {
                int threads = Enumerable.Range(0, Threads).Count(t => regions[t % 4] == region && (t % 2 == 0 ? "card" : "cash") == payment);
                double orderCount = scrape.Named("shop_orders_total").Where(s => s.Labels["region"] == region && s.Labels["payment_method"] == payment).Sum(s => s.Value);
                Assert.Equal(threads * PerThread, orderCount);
                double checkouts = scrape.Named("shop_checkout_duration_seconds_count").Where(s => s.Labels["region"] == region && s.Labels["payment_method"] == payment).Sum(s => s.Value);
                Assert.Equal(threads * PerThread, checkouts);
                // 0.03 s lies in the le=0.05 bucket and above le=0.025.
                if (threads > 0)
                {
                    Assert.Equal(threads * PerThread, scrape.Named("shop_checkout_duration_seconds_bucket").Single(s => s.Labels["region"] == region && s.Labels["payment_method"] == payment && s.Labels["le"] == "0.05").Value);
                    Assert.Equal(0, scrape.Named("shop_checkout_duration_seconds_bucket").Single(s => s.Labels["region"] == region && s.Labels["payment_method"] == payment && s.Labels["le"] == "0.025").Value);
                }
            }

            Assert.Equal(0, scrape.Named("shop_carts_open").Single(s => s.Labels["region"] == region).Value);
        }

        Assert.Equal(42, scrape.Named("shop_stock").Single(s => s.Labels["warehouse"] == "north").Value);
        Assert.Contains("# HELP shop_orders_total Orders placed.", scrape.Text, StringComparison.Ordinal);
        Assert.Contains("# TYPE shop_orders_total counter", scrape.Text, StringComparison.Ordinal);
        Assert.Contains("# TYPE shop_checkout_duration_seconds histogram", scrape.Text, StringComparison.Ordinal);
        Assert.Contains("# TYPE shop_carts_open gauge", scrape.Text, StringComparison.Ordinal);

        Scrape openMetrics = await app.ScrapeAsync(openMetrics: true);
        Assert.Contains("# TYPE shop_orders counter", openMetrics.Text, StringComparison.Ordinal);
        Assert.Contains("# UNIT shop_checkout_duration_seconds seconds", openMetrics.Text, StringComparison.Ordinal);
        Assert.EndsWith("# EOF\n", openMetrics.Text, StringComparison.Ordinal);
        await ExpositionTests.AssertPromtoolAccepts(scrape.Text);
    }

    [Fact]
    public async Task RuntimeKestrelAndRoutingMeters_OnByDefault_OffWhenCleared()
    {
        await using (TestApp app = await TestApp.StartAsync())
        {
            for (int i = 0; i < 5; i++)
            {
                (await app.Client.GetAsync("/items/" + i, Ct)).Dispose();
            }

            Scrape scrape = await app.ScrapeAsync();
            Assert.NotEmpty(scrape.Named("dotnet_gc_heap_total_allocated_bytes_total"));
            Assert.NotEmpty(scrape.Named("dotnet_process_cpu_count"));
            Assert.NotEmpty(scrape.Named("dotnet_thread_pool_work_item_count_total"));
            // Kestrel's meter belongs to this app's host: its connections gauge has a series once a connection was made.
            Assert.NotEmpty(scrape.Named("kestrel_active_connections"));
            Assert.True(scrape.Named("aspnetcore_routing_match_attempts_total").Sum(s => s.Value) >= 5);
            // Hosting's own request metrics are not collected a second time.
            Assert.DoesNotContain("http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_response_status_code", scrape.Text, StringComparison.Ordinal);
            Assert.Equal(1, scrape.Text.Split('\n').Count(l => l == "# TYPE http_server_request_duration_seconds histogram"));
            await ExpositionTests.AssertPromtoolAccepts(scrape.Text);
        }

        await using (TestApp app = await TestApp.StartAsync(o => o.Meters.Clear()))
        {
            (await app.Client.GetAsync("/items/1", Ct)).Dispose();
            Scrape scrape = await app.ScrapeAsync();
            Assert.Empty(scrape.Named("dotnet_process_cpu_count"));
            Assert.Empty(scrape.Named("kestrel_active_connections"));
            Assert.Empty(scrape.Named("aspnetcore_routing_match_attempts_total"));
            Assert.NotEmpty(scrape.Named("http_server_request_duration_seconds_count"));
        }
    }

    [Fact]
    public async Task HistogramBoundaries_FromAdviceElseFromTheOptions_InvalidOnesFailStartup()
    {
        string meterName = UniqueMeter();
        await using (TestApp app = await TestApp.StartAsync(o =>
        {
            o.Meters.Add(meterName);
            o.HistogramBoundaries = [1, 10, 100];
        }))
        {
            Meter meter = app.App.Services.GetRequiredService<IMeterFactory>().Create(meterName);
            meter.CreateHistogram<long>("queue.wait", "ms").Record(7);
            meter.CreateHistogram<long>("batch.size", "{item}", null, null, new InstrumentAdvice<long> { HistogramBucketBoundaries = [2, 4] }).Record(3);
            Scrape scrape = await app.ScrapeAsync();
            Assert.Equal(["1", "10", "100", "+Inf"], scrape.Named("queue_wait_milliseconds_bucket").Select(s => s.Labels["le"]));
            Assert.Equal([0.0, 1, 1, 1], scrape.Named("queue_wait_milliseconds_bucket").Select(s => s.Value));
            Assert.Equal(["2", "4", "+Inf"], scrape.Named("batch_size_bucket").Select(s => s.Labels["le"]));
        }

        var e = await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await using TestApp app = await TestApp.StartAsync(o => o.HistogramBoundaries = [10, 5]);
        });
        Assert.Contains("HistogramBoundaries[1] = 5", e.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task UnlistedMeters_AreNotCollected()
    {
        string listed = UniqueMeter(), unlisted = UniqueMeter();
        await using TestApp app = await TestApp.StartAsync(o => o.Meters.Add(listed));
        IMeterFactory factory = app.App.Services.GetRequiredService<IMeterFactory>();
        factory.Create(listed).CreateCounter<long>("listed.things").Add(3);
        factory.Create(unlisted).CreateCounter<long>("unlisted.things").Add(3);
        Scrape scrape = await app.ScrapeAsync();
        Assert.Equal(3, scrape.Named("listed_things_total").Single().Value);
        Assert.Empty(scrape.Named("unlisted_things_total"));
    }

    [Fact]
    public async Task BadInput_CountedCappedOrEscaped_ScrapeStaysValid_NothingThrownIntoTheCaller()
    {
        string meterName = UniqueMeter();
        await using TestApp app = await TestApp.StartAsync(o =>
        {
            o.Meters.Add(meterName);
            o.MaxSeriesPerMetric = 100;
        });
        Meter meter = app.App.Services.GetRequiredService<IMeterFactory>().Create(meterName);
        Counter<long> c = meter.CreateCounter<long>("bad.adds");
        Counter<double> d = meter.CreateCounter<double>("bad.amounts");
        Histogram<double> h = meter.CreateHistogram<double>("bad.latency", "s");
        c.Add(-1);
        d.Add(double.NaN);
        d.Add(double.NegativeInfinity);
        h.Record(double.NaN);
        h.Record(double.PositiveInfinity);
        c.Add(1, new KeyValuePair<string, object?>("label", "quote \" backslash \\ newline \n end"));
        c.Add(1, new KeyValuePair<string, object?>("9 odd-key", 7));
        for (int i = 0; i < 10_000; i++)
        {
            c.Add(1, new KeyValuePair<string, object?>("path", "/random/" + Guid.NewGuid()));
        }

        Scrape scrape = await app.ScrapeAsync();
        Assert.Equal(10_002, scrape.Named("bad_adds_total").Sum(s => s.Value));
        Assert.Equal(101, scrape.Named("bad_adds_total").Count());
        Assert.Equal(10_000 - 98, scrape.Named("bad_adds_total").Single(s => s.Labels.ContainsKey("otel_metric_overflow")).Value);
        Assert.Contains(scrape.Named("bad_adds_total"), s => s.Labels.TryGetValue("_9_odd_key", out string? v) && v == "7");
        Assert.Contains("label=\"quote \\\" backslash \\\\ newline \\n end\"", scrape.Text, StringComparison.Ordinal);
        Assert.Equal(5, scrape.Named("percpu_invalid_values_total").Single().Value);
        await ExpositionTests.AssertPromtoolAccepts(scrape.Text);
        Assert.EndsWith("# EOF\n", (await app.ScrapeAsync(openMetrics: true)).Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task LabelledFamilies_FromTheRegistry_ShareThePipeline()
    {
        await using TestApp app = await TestApp.StartAsync();
        MetricRegistry registry = app.App.Services.GetRequiredService<MetricRegistry>();
        CounterFamily jobs = registry.CreateCounter("worker.jobs", "{job}", "Jobs processed.", "queue", "outcome");
        HistogramFamily latency = registry.CreateHistogram("worker.job.duration", "s", "Job duration.", null, "queue");
        GaugeFamily depth = registry.CreateGauge("worker.queue.depth", "{job}", null, "queue");
        Assert.Same(jobs, registry.CreateCounter("worker.jobs", "{job}", "Jobs processed.", "queue", "outcome"));

        PerCpuCounter ok = jobs.WithLabels("emails", "ok");
        PerCpuHistogram emails = latency.WithLabels("emails");
        const int Threads = 16, PerThread = 20_000;
        await Task.WhenAll(Enumerable.Range(0, Threads).Select(_ => Task.Factory.StartNew(() =>
        {
            for (int i = 0; i < PerThread; i++)
            {
                ok.Increment();
                emails.Record(0.2);
            }
        }, Ct, TaskCreationOptions.LongRunning, TaskScheduler.Default)));
        jobs.WithLabels("emails", "failed").Add(3);
        depth.WithLabels("emails").Set(12);

        Scrape scrape = await app.ScrapeAsync();
        Assert.Equal(Threads * PerThread, scrape.Named("worker_jobs_total").Single(s => s.Labels["outcome"] == "ok").Value);
        Assert.Equal(3, scrape.Named("worker_jobs_total").Single(s => s.Labels["outcome"] == "failed").Value);
        Assert.Equal(Threads * PerThread, scrape.Named("worker_job_duration_seconds_count").Single().Value);
        Assert.Equal(Threads * PerThread, scrape.Named("worker_job_duration_seconds_bucket").Single(s => s.Labels["le"] == "0.25").Value);
        Assert.Equal(12, scrape.Named("worker_queue_depth").Single().Value);
        await ExpositionTests.AssertPromtoolAccepts(scrape.Text);
    }

    [Fact]
    public async Task TwoInstrumentsWithOnePrometheusName_OneIsLeftOut_ScrapeStaysValid()
    {
        string meterName = UniqueMeter();
        await using TestApp app = await TestApp.StartAsync(o => o.Meters.Add(meterName));
        app.App.Services.GetRequiredService<MetricRegistry>().CreateGauge("dup.name").WithLabels().Set(1);
        app.App.Services.GetRequiredService<IMeterFactory>().Create(meterName).CreateObservableGauge("dup_name", () => 2);
        Scrape scrape = await app.ScrapeAsync();
        Assert.Equal(1, scrape.Named("dup_name").Single().Value);
        Assert.Equal(1, scrape.Named("percpu_metric_name_conflicts_total").Single().Value);
        await ExpositionTests.AssertPromtoolAccepts(scrape.Text);
    }

    /// <summary>
    /// Two hosts in one process (as test servers are): each one's /metrics has its own ASP.NET Core meters only, since
    /// each host's meters come from its own IMeterFactory; before, each listener also aggregated the other's.
    /// </summary>
    [Fact]
    public async Task TwoHostsInOneProcess_EachCollectsOnlyItsOwnMeters()
    {
        await using TestApp quiet = await TestApp.StartAsync();
        await using TestApp busy = await TestApp.StartAsync();
        for (int i = 0; i < 7; i++)
        {
            using HttpResponseMessage r = await busy.Client.GetAsync("/items/" + i, TestContext.Current.CancellationToken);
        }

        static double Items(Scrape s) => s.Named("aspnetcore_routing_match_attempts_total").Where(x => x.Labels.GetValueOrDefault("http_route") == "/items/{id:int}").Sum(x => x.Value);
        Assert.Equal(7, Items(await busy.ScrapeAsync()));
        Assert.Equal(0, Items(await quiet.ScrapeAsync()));
    }
}
