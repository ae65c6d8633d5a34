using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace PerCpu.AspNetCore.Tests;

/// <summary>A real Kestrel app on 127.0.0.1 (ephemeral port) with PerCpu metrics and a set of routes for the tests.</summary>
internal sealed class TestApp : IAsyncDisposable
{
    private TestApp(WebApplication app, HttpClient client, List<Exception> handled)
    {
        App = app;
        Client = client;
        HandledExceptions = handled;
    }

    public WebApplication App { get; }

    public HttpClient Client { get; }

    /// <summary>Exceptions that reached the app's own handler (outside the metrics middleware).</summary>
    public List<Exception> HandledExceptions { get; }

    public static async Task<TestApp> StartAsync(Action<PerCpuMetricsOptions>? configure = null, Action<WebApplicationBuilder>? builder = null, Action<WebApplication>? routes = null)
    {
        WebApplicationBuilder b = WebApplication.CreateSlimBuilder();
        b.WebHost.UseUrls("http://127.0.0.1:0");
        b.Logging.ClearProviders();
        b.Services.AddPerCpuMetrics(configure);
        builder?.Invoke(b);
        WebApplication app = b.Build();
        var handled = new List<Exception>();

        // The app's own exception handling, outside the metrics middleware: it must still receive every exception.
        app.Use(async (context, next) =>
        {
            try
            {
                await next(context);
            }
            catch (Exception ex)
            {
                lock (handled)
                {
                    handled.Add(ex);
                }

                context.Response.StatusCode = 500;
            }
        });
        app.UsePerCpuMetrics();
        app.MapGet("/items/{id:int}", (int id) => Results.Ok(id));
        app.MapGet("/status/{code:int}", (int code) => Results.StatusCode(code));
        app.MapGet("/throw", string () => throw new InvalidOperationException("test failure"));
        app.MapGet("/throw-arg", string () => throw new ArgumentException("test failure"));
        app.MapGet("/excluded-attribute", [ExcludeFromPerCpuMetrics] () => "x");
        app.MapGet("/excluded-convention", () => "x").ExcludeFromPerCpuMetrics();
        app.MapGet("/excluded-aspnet", () => "x").DisableHttpMetrics();
        app.MapPost("/echo", async (HttpRequest r) => Results.Text(await new StreamReader(r.Body).ReadToEndAsync()));
        routes?.Invoke(app);
        app.MapPerCpuMetrics();
        await app.StartAsync();

        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var client = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(30) };
        return new TestApp(app, client, handled);
    }

    /// <summary>
    /// A scrape once <paramref name="requests"/> requests are recorded (at most 10 s): a response can reach the client
    /// before the middleware, after the endpoint wrote and flushed it, records the request.
    /// </summary>
    public async Task<Scrape> ScrapeWhenRecordedAsync(double requests)
    {
        Scrape scrape = await ScrapeAsync();
        for (var clock = System.Diagnostics.Stopwatch.StartNew(); scrape.Named("http_server_request_duration_seconds_count").Sum(s => s.Value) < requests && clock.Elapsed < TimeSpan.FromSeconds(10);)
        {
            await Task.Delay(50);
            scrape = await ScrapeAsync();
        }

        return scrape;
    }

    public async Task<Scrape> ScrapeAsync(bool openMetrics = false)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        if (openMetrics)
        {
            request.Headers.Accept.ParseAdd("application/openmetrics-text; version=1.0.0");
        }

        using HttpResponseMessage response = await Client.SendAsync(request);
        response.EnsureSuccessStatusCode();
        return Scrape.Parse(await response.Content.ReadAsStringAsync());
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
    }
}
