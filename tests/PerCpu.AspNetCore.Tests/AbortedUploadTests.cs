using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// Uploads whose client resets the connection mid-body, recorded by PerCpu and by ASP.NET Core's own
/// <c>http.server.request.duration</c> in the same app: the same status codes and <c>error.type</c>, request for
/// request. Kestrel decides between 499 and 500, and whether the exception names an error, from when it marked the
/// connection aborted, so the split varies from run to run; both sides must agree on it every time.
/// </summary>
public sealed class AbortedUploadTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task UploadsResetMidBody_SameStatusAndErrorTypeAsAspNetCoresOwnMetric()
    {
        WebApplicationBuilder b = WebApplication.CreateSlimBuilder();
        b.WebHost.UseUrls("http://127.0.0.1:0");
        b.Logging.ClearProviders();
        b.Services.AddPerCpuMetrics();
        await using WebApplication app = b.Build();
        app.UsePerCpuMetrics();
        app.MapPost("/upload", async (HttpRequest request) =>
        {
            await request.Body.CopyToAsync(Stream.Null);
            return Results.Ok();
        });
        app.MapPerCpuMetrics();
        await app.StartAsync(Ct);
        using var collector = new MetricCollector<double>(app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(), "Microsoft.AspNetCore.Hosting", "http.server.request.duration");
        var address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());

        const int Uploads = 60;
        await Parallel.ForAsync(0, Uploads, new ParallelOptions { MaxDegreeOfParallelism = 6, CancellationToken = Ct }, async (i, ct) =>
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(address.Host, address.Port, ct);
            await socket.SendAsync(Encoding.ASCII.GetBytes($"POST /upload HTTP/1.1\r\nHost: {address.Authority}\r\nContent-Length: 1000000\r\n\r\n"), SocketFlags.None, ct);
            await socket.SendAsync(new byte[8192 * (1 + (i % 4))], SocketFlags.None, ct);
            await Task.Delay(20 + (i % 3 * 10), ct); // the app is reading by then; a little variety in when the reset lands
            socket.LingerState = new LingerOption(true, 0); // close with RST: the client resets mid-body
            socket.Close();
        });

        using var client = new HttpClient { BaseAddress = address };
        Dictionary<string, double> percpu = [], aspnet = [];
        var clock = Stopwatch.StartNew();
        double last = -1;
        while (clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            percpu = Scrape.Parse(await client.GetStringAsync("/metrics", Ct)).Named("http_server_request_duration_seconds_count")
                .Where(s => s.Labels.GetValueOrDefault("http_route") == "/upload")
                .GroupBy(s => $"{s.Labels["http_response_status_code"]} {s.Labels.GetValueOrDefault("error_type")}".TrimEnd())
                .ToDictionary(g => g.Key, g => g.Sum(s => s.Value));
            aspnet = collector.GetMeasurementSnapshot()
                .Where(m => Equals(m.Tags.GetValueOrDefault("http.route"), "/upload"))
                .GroupBy(m => $"{m.Tags["http.response.status_code"]} {m.Tags.GetValueOrDefault("error.type")}".TrimEnd())
                .ToDictionary(g => g.Key, g => (double)g.Count());
            // A reset that lands before Kestrel has parsed the request leaves no request at all: wait until both sides
            // agree on a count that has stopped moving.
            if (aspnet.Values.Sum() == percpu.Values.Sum() && aspnet.Values.Sum() == last && clock.Elapsed > TimeSpan.FromSeconds(2))
            {
                break;
            }

            last = aspnet.Values.Sum();
            await Task.Delay(250, Ct);
        }

        TestContext.Current.TestOutputHelper?.WriteLine($"ASP.NET Core: {Show(aspnet)}; PerCpu: {Show(percpu)}");
        Assert.True(aspnet.Values.Sum() >= 10, $"only {aspnet.Values.Sum()} of {Uploads} uploads reached the app");
        Assert.True(Show(aspnet) == Show(percpu), $"ASP.NET Core: {Show(aspnet)}; PerCpu: {Show(percpu)}");
    }

    private static string Show(Dictionary<string, double> counts) => string.Join(", ", counts.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key} x {p.Value}"));
}
