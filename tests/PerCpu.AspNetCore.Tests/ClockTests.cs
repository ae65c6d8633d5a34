using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace PerCpu.AspNetCore.Tests;

/// <summary>The request clock through Kestrel: either source measures a known delay, and the scrape names the source in use.</summary>
public sealed class ClockTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [InlineData(PerCpuClockSource.Stopwatch)]
    [InlineData(PerCpuClockSource.Rdtsc)]
    [InlineData(PerCpuClockSource.Auto)]
    public async Task RequestDuration_MeasuresTheHandlersDelay_AndTheScrapeNamesTheSource(PerCpuClockSource source)
    {
        PerCpuClockSource expected = PerCpuClock.Resolve(source, out _); // Rdtsc where unavailable: Stopwatch, and the test shows that fallback
        await using TestApp app = await TestApp.StartAsync(
            o => o.Clock = source,
            routes: a => a.MapGet("/wait", async () =>
            {
                await Task.Delay(150);
                return Results.Ok();
            }));
        var client = new System.Diagnostics.Stopwatch();
        for (int i = 0; i < 4; i++)
        {
            client.Start();
            using HttpResponseMessage r = await app.Client.GetAsync("/wait", Ct);
            client.Stop();
            Assert.Equal(System.Net.HttpStatusCode.OK, r.StatusCode);
        }

        Scrape scrape = await app.ScrapeWhenRecordedAsync(4);
        Scrape.Sample count = Assert.Single(scrape.Named("http_server_request_duration_seconds_count"), s => s.Labels["http_route"] == "/wait");
        Scrape.Sample sum = Assert.Single(scrape.Named("http_server_request_duration_seconds_sum"), s => s.Labels["http_route"] == "/wait");
        Assert.Equal(4, count.Value);
        Assert.InRange(sum.Value, 4 * 0.145, client.Elapsed.TotalSeconds); // at least the delays, at most what the client waited
        Scrape.Sample clock = Assert.Single(scrape.Named("percpu_clock"));
        Assert.Equal(expected.ToString(), clock.Labels["source"]);
        Assert.Equal(1, clock.Value);
    }
}
