using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Metrics;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// A MeterProvider listens to every meter of a name in the process, so tests that use one run alone: apps of other
/// test classes (with their own PerCpu.AspNetCore meters) would otherwise add to the same streams.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessWideListenerCollection
{
    public const string Name = "Process-wide meter listeners";
}

/// <summary>The sample's OpenTelemetry SDK pipeline carries the PerCpu instruments, with the numbers /metrics shows.</summary>
[Collection(ProcessWideListenerCollection.Name)]
public sealed class OpenTelemetrySdkTests
{
    [Fact]
    public async Task SampleSdkPipeline_AddMeter_ExportsTheSameCountsAsTheScrape()
    {
        CancellationToken ct = TestContext.Current.CancellationToken;
        var exported = new List<Metric>();
        await using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b =>
        {
            b.UseSetting("Sample:ConsoleExport", "false");
            b.ConfigureServices(s => s.ConfigureOpenTelemetryMeterProvider(m => m.AddInMemoryExporter(exported)));
        });
        using HttpClient client = factory.CreateClient();
        for (int i = 0; i < 30; i++)
        {
            using HttpResponseMessage r = await client.GetAsync(i % 3 == 0 ? "/missing/" + i : "/items/" + i, ct);
        }

        Dictionary<string, double> scraped = Scrape.Parse(await client.GetStringAsync("/metrics", ct)).CountsByRouteMethodStatus();
        Assert.True(factory.Services.GetRequiredService<MeterProvider>().ForceFlush(10_000));

        Metric count = exported.Last(m => m.Name == "http.server.request.duration.count");
        Assert.Equal("PerCpu.AspNetCore", count.MeterName);
        var points = new Dictionary<string, double>();
        foreach (ref readonly MetricPoint p in count.GetMetricPoints())
        {
            var tags = new Dictionary<string, object?>();
            foreach (KeyValuePair<string, object?> t in p.Tags)
            {
                tags[t.Key] = t.Value;
            }

            points[$"{tags["http.route"]} {tags["http.request.method"]} {tags["http.response.status_code"]}"] = p.GetSumLong();
        }

        Assert.Equal(scraped.OrderBy(x => x.Key), points.OrderBy(x => x.Key));
        Assert.Equal(20, points["/items/{id:int} GET 200"]);
        Assert.Contains(exported, m => m.Name == "http.server.request.duration.bucket");
        Assert.Contains(exported, m => m.Name == "http.server.active_requests");
        Assert.Contains(exported, m => m.Name == "percpu.http.server.request_rate");
    }

    [Fact]
    public async Task SampleConsoleExport_OnByDefault_PrintsThePerCpuInstruments()
    {
        CancellationToken ct = TestContext.Current.CancellationToken;
        await using SampleProcess sample = await SampleProcess.StartAsync(new Dictionary<string, string>
        {
            ["Sample__ConsoleExport"] = "true",
            ["Sample__ConsoleExportIntervalSeconds"] = "1",
        });
        using var client = new HttpClient { BaseAddress = sample.BaseAddress };
        using (await client.GetAsync("/items/1", ct))
        {
        }

        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!sample.Output.Contains("http.server.request.duration.count", StringComparison.Ordinal) && clock.Elapsed < TimeSpan.FromSeconds(20))
        {
            await Task.Delay(200, ct);
        }

        string output = sample.Output;
        Assert.Contains("Metric Name: http.server.request.duration.count", output, StringComparison.Ordinal);
        Assert.Contains("PerCpu.AspNetCore", output, StringComparison.Ordinal);
        Assert.Contains("http.route: /items/{id:int}", output, StringComparison.Ordinal);
    }
}
