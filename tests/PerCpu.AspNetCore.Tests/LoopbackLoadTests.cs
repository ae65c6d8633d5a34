using System.Collections.Concurrent;
using System.Diagnostics;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// The k6 invariant without k6: a bounded load from an in-repo driver with many connections against the sample on
/// 127.0.0.1; the scrape's increase must equal the requests completed, per route and status.
/// </summary>
public sealed class LoopbackLoadTests
{
    [Fact]
    public async Task BoundedLoad_ManyConnections_ScrapeEqualsRequestsCompletedPerRouteAndStatus()
    {
        CancellationToken ct = TestContext.Current.CancellationToken;
        await using SampleProcess sample = await SampleProcess.StartAsync(new Dictionary<string, string> { ["Sample__SlowMilliseconds"] = "20" });
        using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = 128, PooledConnectionLifetime = TimeSpan.FromMinutes(5) };
        using var client = new HttpClient(handler) { BaseAddress = sample.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        (string Method, string Path, string Key)[] mix =
        [
            ("GET", "/items/1", "GET /items/{id:int} 200"), ("GET", "/items/2", "GET /items/{id:int} 200"), ("GET", "/items/3", "GET /items/{id:int} 200"),
            ("GET", "/missing/4", "GET /missing/{id} 404"), ("GET", "/slow", "GET /slow 200"), ("GET", "/error", "GET /error 500"),
            ("GET", "/nope", "GET unhandled 404"), ("DELETE", "/items/1", "DELETE - 405"),
        ];
        Dictionary<string, double> before = await sample.CountsAsync(client);

        const int Requests = 12_000;
        var completed = new ConcurrentDictionary<string, int>();
        var clock = Stopwatch.StartNew();
        await Parallel.ForAsync(0, Requests, new ParallelOptions { MaxDegreeOfParallelism = 128, CancellationToken = ct }, async (i, token) =>
        {
            (string method, string path, string key) = mix[i % mix.Length];
            using var request = new HttpRequestMessage(new HttpMethod(method), path);
            using HttpResponseMessage r = await client.SendAsync(request, token);
            completed.AddOrUpdate($"{method} {key.Split(' ', 3)[1]} {(int)r.StatusCode}", 1, (_, n) => n + 1);
        });
        clock.Stop();

        Dictionary<string, double> after = await sample.CountsAsync(client);
        var delta = after.ToDictionary(p => p.Key, p => p.Value - before.GetValueOrDefault(p.Key)).Where(p => p.Value != 0).OrderBy(p => p.Key).ToList();
        Assert.Equal(completed.OrderBy(p => p.Key).Select(p => (p.Key, (double)p.Value)), delta.Select(p => (p.Key, p.Value)));
        Assert.Equal(mix.Select(m => m.Key).Distinct().Order(), completed.Keys.Order());
        TestContext.Current.TestOutputHelper?.WriteLine($"{Requests} requests in {clock.Elapsed.TotalSeconds:0.0} s ({Requests / clock.Elapsed.TotalSeconds:0} req/s) over up to 128 connections");
    }
}
