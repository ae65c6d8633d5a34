using System.Net;
using Microsoft.Extensions.DependencyInjection;
using PerCpu.AspNetCore.Internal;

namespace PerCpu.AspNetCore.Tests;

public sealed class MiddlewareTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task ConcurrentRequests_ScrapeCountsExactPerSeries()
    {
        await using TestApp app = await TestApp.StartAsync();
        var expected = new Dictionary<string, int>();
        string[] paths = ["/items/1", "/items/2", "/status/201", "/status/404", "/status/503", "/nowhere/a", "/nowhere/b"];
        const int N = 3_000;
        for (int i = 0; i < N; i++)
        {
            string key = Key(paths[i % paths.Length]);
            expected[key] = expected.GetValueOrDefault(key) + 1;
        }

        await Parallel.ForAsync(0, N, new ParallelOptions { MaxDegreeOfParallelism = 64, CancellationToken = Ct }, async (i, ct) =>
        {
            using HttpResponseMessage r = await app.Client.GetAsync(paths[i % paths.Length], ct);
        });

        Scrape scrape = await app.ScrapeAsync();
        Dictionary<string, double> counts = scrape.CountsByRouteMethodStatus();
        Assert.Equal(expected.OrderBy(p => p.Key).Select(p => (p.Key, (double)p.Value)), counts.OrderBy(p => p.Key).Select(p => (p.Key, p.Value)));

        // Buckets are cumulative, end in +Inf = count, and the scrape endpoint itself is absent.
        foreach (IGrouping<string, Scrape.Sample> series in scrape.Named("http_server_request_duration_seconds_bucket").GroupBy(s => Scrape.RouteOf(s.Labels) + s.Labels["http_response_status_code"]))
        {
            double[] values = [.. series.Select(s => s.Value)];
            Assert.True(values.Zip(values.Skip(1)).All(p => p.First <= p.Second), "cumulative buckets never decrease");
            Assert.Equal("+Inf", series.Last().Labels["le"]);
        }

        Assert.DoesNotContain(scrape.Named("http_server_request_duration_seconds_count"), s => s.Labels.GetValueOrDefault("http_route") == "/metrics");

        // A request that matched nothing: no http_route, aspnetcore_request_is_unhandled="true", as ASP.NET Core reports it.
        Assert.Contains(scrape.Named("http_server_request_duration_seconds_count"), s => !s.Labels.ContainsKey("http_route") && s.Labels.GetValueOrDefault("aspnetcore_request_is_unhandled") == "true" && s.Labels["http_response_status_code"] == "404");

        static string Key(string path) => path switch
        {
            "/items/1" or "/items/2" => "/items/{id:int} GET 200",
            "/status/201" => "/status/{code:int} GET 201",
            "/status/404" => "/status/{code:int} GET 404",
            "/status/503" => "/status/{code:int} GET 503 503", // a 5xx without an exception: error.type is the status
            _ => "unhandled GET 404",
        };
    }

    [Fact]
    public async Task Exception_RecordedWithErrorType_AndStillReachesTheAppsHandler()
    {
        await using TestApp app = await TestApp.StartAsync();

        for (int i = 0; i < 5; i++)
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/throw", Ct);
            Assert.Equal(HttpStatusCode.InternalServerError, r.StatusCode);
        }

        using (await app.Client.GetAsync("/throw-arg", Ct))
        {
        }

        Scrape scrape = await app.ScrapeAsync();
        Dictionary<string, double> counts = scrape.CountsByRouteMethodStatus();
        Assert.Equal(5, counts["/throw GET 500 System.InvalidOperationException"]);
        Assert.Equal(1, counts["/throw-arg GET 500 System.ArgumentException"]);
        Assert.Equal(6, app.HandledExceptions.Count);
        Assert.IsType<InvalidOperationException>(app.HandledExceptions[0]);
        Assert.Equal("test failure", app.HandledExceptions[0].Message);
    }

    [Fact]
    public async Task OptedOutEndpoints_AreAbsent()
    {
        await using TestApp app = await TestApp.StartAsync();
        foreach (string path in new[] { "/excluded-attribute", "/excluded-convention", "/excluded-aspnet", "/metrics" })
        {
            using HttpResponseMessage r = await app.Client.GetAsync(path, Ct);
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }

        using (await app.Client.GetAsync("/items/5", Ct))
        {
        }

        Scrape scrape = await app.ScrapeAsync();
        string[] routes = [.. scrape.Named("http_server_request_duration_seconds_count").Select(s => s.Labels["http_route"])];
        Assert.Equal(["/items/{id:int}"], routes);
        Assert.DoesNotContain(scrape.Named(Exposition.RouteRate), s => s.Labels["http_route"].Contains("excluded", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ActiveRequests_CountsInFlight_AndReturnsToZero()
    {
        await using TestApp app = await TestApp.StartAsync(builder: b => { });
        Scrape idle = await app.ScrapeAsync();
        Assert.Equal(0, idle.Named("http_server_active_requests").Single(s => s.Labels["http_request_method"] == "GET").Value);

        await Parallel.ForAsync(0, 500, new ParallelOptions { MaxDegreeOfParallelism = 32, CancellationToken = Ct }, async (i, ct) =>
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/items/1", ct);
        });

        Scrape after = await app.ScrapeAsync();
        Assert.Equal(0, after.Named("http_server_active_requests").Sum(s => s.Value));
    }

    [Fact]
    public void UsePerCpuMetrics_WithoutAddPerCpuMetrics_FailsWithTheFix()
    {
        Microsoft.AspNetCore.Builder.WebApplication app = Microsoft.AspNetCore.Builder.WebApplication.CreateSlimBuilder().Build();
        InvalidOperationException ex = Assert.Throws<InvalidOperationException>(() => Microsoft.AspNetCore.Builder.PerCpuMetricsApplicationBuilderExtensions.UsePerCpuMetrics(app));
        Assert.Contains("AddPerCpuMetrics()", ex.Message, StringComparison.Ordinal);
    }
}

/// <summary>Tests that measure the process's heap: they run alone, since any test running beside them allocates too.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class HeapMeasurementCollection
{
    public const string Name = "Process-wide heap measurements";
}

[Collection(HeapMeasurementCollection.Name)]
public sealed class CardinalityFloodTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task CardinalityFlood_SeriesStayUnderCapPlusOne_MemoryFlat()
    {
        const int Cap = 50;
        await using TestApp app = await TestApp.StartAsync(o => o.MaxSeriesPerMetric = Cap);
        var rng = new Random(7);
        string[] methods = ["GET", "POST", "PUT", "BREW", "PROPFIND", "DELETE", "X-RANDOM"];

        async Task Flood(int count)
        {
            await Parallel.ForAsync(0, count, new ParallelOptions { MaxDegreeOfParallelism = 32, CancellationToken = Ct }, async (i, ct) =>
            {
                int kind = i % 3;
                string path = kind switch
                {
                    0 => "/random/" + Guid.NewGuid().ToString("N"),
                    1 => "/status/" + (200 + (i % 800)).ToString(System.Globalization.CultureInfo.InvariantCulture), // up to 999: beyond the table
                    _ => "/items/" + i.ToString(System.Globalization.CultureInfo.InvariantCulture),
                };
                using var request = new HttpRequestMessage(new HttpMethod(methods[i % methods.Length]), path);
                using HttpResponseMessage r = await app.Client.SendAsync(request, ct);
            });
        }

        await Flood(10_000);
        HttpMetricsStore store = app.App.Services.GetRequiredService<HttpMetricsStore>();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        long before = GC.GetTotalMemory(forceFullCollection: true);
        await Flood(90_000);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long after = GC.GetTotalMemory(forceFullCollection: true);

        Scrape scrape = await app.ScrapeAsync();
        var series = scrape.Named("http_server_request_duration_seconds_count").ToList();
        Assert.InRange(series.Count, 1, Cap + 1);
        Assert.Single(series, s => s.Labels.ContainsKey("otel_metric_overflow"));
        Assert.Equal(100_000, series.Sum(s => s.Value)); // nothing lost: every request is in a series or the overflow series
        Assert.True(store.OverflowRecords > 0);
        Assert.Equal(Cap, scrape.Named("percpu_series").Single().Value);
        // Flat memory: 90k more requests with fresh paths and labels grew the heap by far less than a series each.
        Assert.True(after - before < 8 * 1024 * 1024, $"heap grew {after - before} bytes during the flood");
        Assert.DoesNotContain(scrape.Samples, s => s.Labels.Values.Any(v => v.Contains("/random/", StringComparison.Ordinal)));
        Assert.All(series.Where(s => s.Labels.ContainsKey("http_request_method")), s => Assert.Contains(s.Labels["http_request_method"], new[] { "GET", "POST", "PUT", "DELETE", "_OTHER" }));
    }
}
