using System.Diagnostics;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// A team moving from the OpenTelemetry stack must see the same request numbers: one app (tests/StackParityApp) run
/// twice, one process on PerCpu's defaults and one on the OpenTelemetry SDK with <c>AddAspNetCoreInstrumentation()</c>
/// and its Prometheus exporter, the same traffic through real Kestrel, and every series of
/// <c>http_server_request_duration_seconds</c> compared label for label, count for count.
/// </summary>
public sealed class StackParityTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task OneTrafficMix_BothStacks_EverySeriesSameLabelsAndCount()
    {
        await using SampleProcess percpu = await SampleProcess.StartParityAppAsync("percpu");
        await using SampleProcess otel = await SampleProcess.StartParityAppAsync("otel");

        // Plain routes, a POST, statuses of every class (5xx with and without an exception), a request that matches
        // nothing, a method routing refuses (405), custom tags, and one the app takes out of the metric.
        (HttpMethod Method, string Path)[] mix =
        [
            (HttpMethod.Get, "/items/1"), (HttpMethod.Get, "/items/2"), (HttpMethod.Post, "/items"),
            (HttpMethod.Get, "/status/201"), (HttpMethod.Get, "/status/404"), (HttpMethod.Get, "/status/500"),
            (HttpMethod.Get, "/status/503"), (HttpMethod.Get, "/throw"), (HttpMethod.Get, "/nowhere"),
            (HttpMethod.Delete, "/items/1"), (HttpMethod.Get, "/tenant/acme"), (HttpMethod.Get, "/tenant/globex"),
            (HttpMethod.Get, "/tenant/acme"), (HttpMethod.Get, "/quiet"),
        ];
        int recorded = 0;
        foreach (SampleProcess app in new[] { percpu, otel })
        {
            using var client = new HttpClient { BaseAddress = app.BaseAddress };
            recorded = 0;
            for (int round = 0; round < 5; round++)
            {
                foreach ((HttpMethod method, string path) in mix)
                {
                    using var request = new HttpRequestMessage(method, path);
                    using HttpResponseMessage response = await client.SendAsync(request, Ct);
                    recorded += path == "/quiet" ? 0 : 1;
                }
            }
        }

        Dictionary<string, double> ours = [], theirs = [];
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(20))
        {
            ours = await CountsAsync(percpu);
            theirs = await CountsAsync(otel);
            if (ours.Values.Sum() >= recorded && theirs.Values.Sum() >= recorded)
            {
                break;
            }

            await Task.Delay(200, Ct);
        }

        Assert.Equal(recorded, theirs.Values.Sum());
        Assert.Equal(theirs.OrderBy(p => p.Key, StringComparer.Ordinal), ours.OrderBy(p => p.Key, StringComparer.Ordinal));

        // The points of the issue, spelled out (the comparison above already requires them).
        Assert.Contains(ours.Keys, k => k.Contains("error_type=503", StringComparison.Ordinal) && k.Contains("http_response_status_code=503", StringComparison.Ordinal));
        Assert.Contains(ours.Keys, k => k.Contains("aspnetcore_request_is_unhandled=true", StringComparison.Ordinal) && !k.Contains("http_route", StringComparison.Ordinal));
        Assert.Equal(10, ours.Where(p => p.Key.Contains("tenant=acme", StringComparison.Ordinal)).Sum(p => p.Value));
        Assert.DoesNotContain(ours.Keys, k => k.Contains("/quiet", StringComparison.Ordinal));
    }

    /// <summary>Request counts by the whole label set (sorted <c>name=value</c> pairs), OpenTelemetry's scope labels aside.</summary>
    private static async Task<Dictionary<string, double>> CountsAsync(SampleProcess app)
    {
        using var client = new HttpClient { BaseAddress = app.BaseAddress };
        Scrape scrape = Scrape.Parse(await client.GetStringAsync("/metrics", Ct));
        return scrape.Named("http_server_request_duration_seconds_count")
            .GroupBy(s => string.Join(",", s.Labels.Where(l => !l.Key.StartsWith("otel_scope_", StringComparison.Ordinal)).OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}")))
            .ToDictionary(g => g.Key, g => g.Sum(s => s.Value));
    }
}
