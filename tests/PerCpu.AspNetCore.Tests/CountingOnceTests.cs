using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// Every request counted once, as ASP.NET Core's own <c>http.server.request.duration</c> counts it: the same mixed
/// traffic (plain, unmatched, thrown and handled, re-executed status pages, client aborts) through every supported
/// middleware order, and PerCpu's scrape must equal what a <see cref="MetricCollector{T}"/> on the hosting meter saw,
/// per route and status.
/// </summary>
public sealed class CountingOnceTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public enum Order
    {
        /// <summary>The README's order: exception handler and status pages outside, PerCpu inside (routing first, implicitly).</summary>
        HandlersThenMetrics,

        /// <summary>PerCpu outermost, the handlers inside it.</summary>
        MetricsThenHandlers,

        /// <summary>Handlers, PerCpu, then an explicit UseRouting: PerCpu runs before the endpoint is known.</summary>
        HandlersMetricsThenRouting,

        /// <summary>An exception handler that answers in place (a delegate, no re-execution), then PerCpu: the sample's setup.</summary>
        DelegateHandlerThenMetrics,
    }

    /// <summary>
    /// An excluded endpoint stays out when the exception handler or the status pages run its request again elsewhere,
    /// and a request that is counted is counted once under its handler. Where routing runs after PerCpu, PerCpu cannot
    /// know the endpoint was excluded: the request is recorded once, under the handler that answered, as ASP.NET
    /// Core's own metric records it (it too looks at the endpoint at the end).
    /// </summary>
    [Theory]
    [InlineData(Order.HandlersThenMetrics)]
    [InlineData(Order.MetricsThenHandlers)]
    [InlineData(Order.HandlersMetricsThenRouting)]
    public async Task ExcludedEndpoint_ReExecutedByTheHandlers_StaysOut(Order order)
    {
        await using WebApplication app = await StartAsync(order);
        using var client = new HttpClient { BaseAddress = Address(app) };
        for (int i = 0; i < 3; i++)
        {
            using HttpResponseMessage thrown = await client.GetAsync("/excluded-throw", Ct);
            Assert.Equal(HttpStatusCode.InternalServerError, thrown.StatusCode);
            using HttpResponseMessage missing = await client.GetAsync("/excluded-missing", Ct);
            Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
            Assert.Equal("status 404", await missing.Content.ReadAsStringAsync(Ct)); // the status page ran
        }

        using (HttpResponseMessage counted = await client.GetAsync("/throw", Ct))
        {
            Assert.Equal(HttpStatusCode.InternalServerError, counted.StatusCode);
        }

        // The one counted request is the last one sent: once it shows, every earlier one has been recorded or left out.
        Dictionary<string, double> counts = [];
        for (var clock = Stopwatch.StartNew(); clock.Elapsed < TimeSpan.FromSeconds(10); await Task.Delay(50, Ct))
        {
            counts = Scrape.Parse(await client.GetStringAsync("/metrics", Ct)).Named("http_server_request_duration_seconds_count")
                .GroupBy(s => Scrape.RouteOf(s.Labels)).ToDictionary(g => g.Key, g => g.Sum(s => s.Value));
            if (counts.GetValueOrDefault("/handle-error") >= 1 && (order != Order.HandlersMetricsThenRouting || counts.Values.Sum() >= 7))
            {
                break;
            }
        }

        Dictionary<string, double> expected = order == Order.HandlersMetricsThenRouting
            ? new() { ["/handle-error"] = 4, ["/status-page/{code:int}"] = 3 }
            : new() { ["/handle-error"] = 1 };
        Assert.Equal(expected, counts);
    }

    /// <summary>Two PerCpu middlewares in one pipeline (UsePerCpuMetrics called twice) count each request once.</summary>
    [Fact]
    public async Task TwoMiddlewares_CountEachRequestOnce()
    {
        await using TestApp app = await TestApp.StartAsync(routes: a => a.UsePerCpuMetrics()); // TestApp adds the first
        for (int i = 0; i < 5; i++)
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/items/" + i, Ct);
        }

        _ = await app.ScrapeWhenRecordedAsync(5);
        await Task.Delay(200, Ct); // a second count, if any, would come right behind the first
        Assert.Equal(5, (await app.ScrapeAsync()).Named("http_server_request_duration_seconds_count").Sum(s => s.Value));
    }

    [Theory]
    [InlineData(Order.HandlersThenMetrics)]
    [InlineData(Order.MetricsThenHandlers)]
    [InlineData(Order.HandlersMetricsThenRouting)]
    [InlineData(Order.DelegateHandlerThenMetrics)]
    public async Task MixedTraffic_PerRouteAndStatus_EqualsAspNetCoresOwnCount(Order order)
    {
        await using WebApplication app = await StartAsync(order);
        using var collector = new MetricCollector<double>(app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(), "Microsoft.AspNetCore.Hosting", "http.server.request.duration");
        using var client = new HttpClient { BaseAddress = Address(app) };

        string[] paths = ["/items/1", "/items/2", "/nowhere", "/throw", "/status/404", "/status/503", "/status/201"];
        int sent = 0;
        for (int i = 0; i < 28; i++)
        {
            using HttpResponseMessage r = await client.GetAsync(paths[i % paths.Length], Ct);
            sent++;
        }

        // Clients that give up on a slow request: the server sees the abort as a cancelled request. They give up only
        // once the server has every one of them (a client that gave up before its request arrived sent nothing).
        var gate = app.Services.GetRequiredService<SlowArrivals>();
        using var giveUp = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        Task[] slow = [.. Enumerable.Range(0, 12).Select(async _ =>
        {
            using var aborting = new HttpClient { BaseAddress = client.BaseAddress };
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => aborting.GetAsync("/slow", giveUp.Token));
        })];
        for (var wait = Stopwatch.StartNew(); Volatile.Read(ref gate.Count) < 12 && wait.Elapsed < TimeSpan.FromSeconds(20);)
        {
            await Task.Delay(20, Ct);
        }

        Assert.Equal(12, gate.Count);
        await giveUp.CancelAsync();
        await Task.WhenAll(slow);
        sent += 12;

        // Both sides record when the server finishes each request: wait until both have every one of them.
        var clock = Stopwatch.StartNew();
        Dictionary<string, double> percpu = [];
        Dictionary<string, double> aspnet = [];
        while (clock.Elapsed < TimeSpan.FromSeconds(20))
        {
            percpu = Scrape.Parse(await client.GetStringAsync("/metrics", Ct)).Named("http_server_request_duration_seconds_count")
                .GroupBy(s => $"{Scrape.RouteOf(s.Labels)} {s.Labels["http_response_status_code"]} {s.Labels.GetValueOrDefault("error_type")}").ToDictionary(g => g.Key.TrimEnd(), g => g.Sum(s => s.Value));
            aspnet = collector.GetMeasurementSnapshot()
                .Where(m => !Equals(m.Tags.GetValueOrDefault("http.route"), "/metrics"))
                .GroupBy(m => $"{Scrape.RouteOf(m.Tags)} {m.Tags["http.response.status_code"]} {m.Tags.GetValueOrDefault("error.type") ?? ServerErrorStatus(m.Tags["http.response.status_code"])}")
                .ToDictionary(g => g.Key.TrimEnd(), g => (double)g.Count());
            if (percpu.Values.Sum() >= sent && aspnet.Values.Sum() >= sent)
            {
                break;
            }

            await Task.Delay(100, Ct);
        }

        Assert.Equal(sent, aspnet.Values.Sum());
        Assert.Equal(Sorted(aspnet), Sorted(percpu));
        Assert.Equal(12, percpu.GetValueOrDefault("/slow 499"));
        if (order == Order.DelegateHandlerThenMetrics)
        {
            return; // no re-execution: the handler answers in place (the sample's setup)
        }

        // Once each: the 4 thrown requests are 4 (under the handler's route, as ASP.NET Core reports them, with the
        // exception's type), the 8 re-executed 404s (4 unmatched, 4 from /status/404) are 8, and the aborted requests
        // are 499 with no error.type, as ASP.NET Core reports a cancellation once the client is gone.
        Assert.Equal(4, percpu.GetValueOrDefault("/handle-error 500 System.InvalidOperationException"));
        Assert.Equal(8, percpu.GetValueOrDefault("/status-page/{code:int} 404"));
        Assert.DoesNotContain(percpu.Keys, k => k.StartsWith("/throw", StringComparison.Ordinal) || k.Contains("TaskCanceled", StringComparison.Ordinal));
        Scrape scrape = Scrape.Parse(await client.GetStringAsync("/metrics", Ct));

        // At rest, nothing is active: not even the scrape that reads the gauge.
        Assert.All(scrape.Named("http_server_active_requests"), s => Assert.Equal(0, s.Value));
    }

    [Theory]
    [InlineData(Order.HandlersThenMetrics)]
    [InlineData(Order.HandlersMetricsThenRouting)]
    public async Task ScrapeEndpoint_HeadAnswers200_AndScrapeIsNeverActive(Order order)
    {
        await using WebApplication app = await StartAsync(order);
        using var client = new HttpClient { BaseAddress = Address(app) };

        using var head = new HttpRequestMessage(HttpMethod.Head, "/metrics");
        using HttpResponseMessage headResponse = await client.SendAsync(head, Ct);
        Assert.Equal(HttpStatusCode.OK, headResponse.StatusCode);
        Assert.StartsWith("text/plain", headResponse.Content.Headers.ContentType?.ToString(), StringComparison.Ordinal);

        for (int i = 0; i < 3; i++)
        {
            Scrape scrape = Scrape.Parse(await client.GetStringAsync("/metrics", Ct));
            Assert.Equal(0, scrape.Named("http_server_active_requests").Single(s => s.Labels["http_request_method"] == "GET").Value);
            Assert.Empty(scrape.Named("http_server_request_duration_seconds_count"));
        }
    }

    /// <summary>
    /// What OpenTelemetry's ASP.NET Core instrumentation adds to the hosting meter's tags: a 5xx without an exception
    /// has its status code as <c>error.type</c> (PerCpu's default, where the hosting meter alone writes none).
    /// </summary>
    private static string? ServerErrorStatus(object? status) => status is int code and >= 500 and <= 599 ? code.ToString(System.Globalization.CultureInfo.InvariantCulture) : null;

    private static async Task<WebApplication> StartAsync(Order order)
    {
        WebApplicationBuilder b = WebApplication.CreateSlimBuilder();
        b.WebHost.UseUrls("http://127.0.0.1:0");
        b.Logging.ClearProviders();
        b.Services.AddPerCpuMetrics();
        b.Services.AddSingleton<SlowArrivals>();
        WebApplication app = b.Build();

        void Handlers()
        {
            app.UseExceptionHandler("/handle-error");
            app.UseStatusCodePagesWithReExecute("/status-page/{0}");
        }

        switch (order)
        {
            case Order.HandlersThenMetrics:
                Handlers();
                app.UsePerCpuMetrics();
                break;
            case Order.MetricsThenHandlers:
                app.UsePerCpuMetrics();
                Handlers();
                break;
            case Order.HandlersMetricsThenRouting:
                Handlers();
                app.UsePerCpuMetrics();
                app.UseRouting();
                break;
            case Order.DelegateHandlerThenMetrics:
                app.UseExceptionHandler(new ExceptionHandlerOptions { ExceptionHandler = _ => Task.CompletedTask });
                app.UsePerCpuMetrics();
                break;
        }

        app.MapGet("/items/{id:int}", (int id) => Results.Ok(id));
        app.MapGet("/status/{code:int}", (int code) => Results.StatusCode(code));
        app.MapGet("/throw", string () => throw new InvalidOperationException("test failure"));
        app.MapGet("/excluded-throw", string () => throw new InvalidOperationException("test failure")).ExcludeFromPerCpuMetrics();
        app.MapGet("/excluded-missing", () => Results.NotFound()).ExcludeFromPerCpuMetrics();
        app.MapGet("/slow", async (SlowArrivals arrivals, CancellationToken ct) =>
        {
            Interlocked.Increment(ref arrivals.Count);
            await Task.Delay(TimeSpan.FromSeconds(30), ct);
            return Results.Ok();
        });
        app.Map("/handle-error", (HttpContext c) => Results.Problem(c.Features.Get<IExceptionHandlerFeature>()?.Error.Message, statusCode: 500));
        app.Map("/status-page/{code:int}", (int code) => Results.Text($"status {code}"));
        app.MapPerCpuMetrics();
        await app.StartAsync();
        return app;
    }

    /// <summary>How many /slow requests reached their handler.</summary>
    private sealed class SlowArrivals
    {
        public int Count;
    }

    private static Uri Address(WebApplication app) =>
        new(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());

    private static List<(string, double)> Sorted(Dictionary<string, double> counts) => [.. counts.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => (p.Key, p.Value))];
}

/// <summary>Scrapes that cannot hurt the app: concurrent scrapes share one rendering, and every one gets the whole output.</summary>
public sealed class ScrapeBurstTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task FiftyConcurrentScrapes_ShareRenderings_EachGetsTheCompleteScrape()
    {
        await using TestApp app = await TestApp.StartAsync();
        for (int code = 200; code < 600; code++)
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/status/" + code, Ct); // 400 series
        }

        PerCpu.AspNetCore.Internal.ScrapeEndpoint endpoint = app.App.Services.GetRequiredService<PerCpu.AspNetCore.Internal.ScrapeEndpoint>();
        long before = endpoint.Renderings;
        string[] bodies = new string[50];
        var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task[] scrapes = [.. Enumerable.Range(0, 50).Select(async i =>
        {
            using var client = new HttpClient { BaseAddress = app.Client.BaseAddress };
            await go.Task;
            bodies[i] = await client.GetStringAsync("/metrics", Ct);
        })];
        go.SetResult();
        await Task.WhenAll(scrapes);
        long renderings = endpoint.Renderings - before;

        Assert.InRange(renderings, 1, 25); // without sharing: 50
        foreach (string body in bodies)
        {
            Scrape scrape = Scrape.Parse(body);
            Assert.Equal(400, scrape.Named("http_server_request_duration_seconds_count").Count());
            Assert.Equal(400, scrape.Named("http_server_request_duration_seconds_count").Sum(s => s.Value));
        }
    }
}
