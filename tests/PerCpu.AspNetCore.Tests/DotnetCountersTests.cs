using System.Diagnostics;
using System.Text.Json;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// dotnet-counters, the tool .NET teams already run, reads the sample's <c>PerCpu.AspNetCore</c> meter during load and
/// must see the same request count as <c>/metrics</c>.
/// </summary>
public sealed class DotnetCountersTests
{
    [Fact]
    public async Task DotnetCounters_CollectingTheMeterDuringLoad_SeesTheRequestsTheScrapeCounts()
    {
        CancellationToken ct = TestContext.Current.CancellationToken;
        string? tool = Environment.GetEnvironmentVariable("PERCPU_DOTNET_COUNTERS");
        if (tool is null || !File.Exists(tool))
        {
            Assert.True(Environment.GetEnvironmentVariable("PERCPU_REQUIRE_TOOLS") != "1", "dotnet-counters is required here (eng/test.sh installs it) but PERCPU_DOTNET_COUNTERS does not name it");
            Assert.Skip("dotnet-counters not installed; eng/test.sh installs it into .tools/");
        }

        await using SampleProcess sample = await SampleProcess.StartAsync();
        using var client = new HttpClient { BaseAddress = sample.BaseAddress };
        const string Key = "GET /items/{id:int} 200";
        for (int i = 0; i < 10; i++)
        {
            using HttpResponseMessage warm = await client.GetAsync("/items/" + i, ct); // the series exists before collection starts
        }

        string output = Path.Combine(Path.GetTempPath(), $"percpu-counters-{Guid.NewGuid():N}.json");
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (string a in new[] { "collect", "-p", sample.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture), "--counters", "PerCpu.AspNetCore", "--format", "json", "-o", output, "--refresh-interval", "1", "--duration", "00:00:00:10" })
        {
            psi.ArgumentList.Add(a);
        }

        using Process counters = Process.Start(psi)!;
        var log = new System.Text.StringBuilder();
        var started = new TaskCompletionSource();
        counters.OutputDataReceived += (_, e) =>
        {
            lock (log)
            {
                log.AppendLine(e.Data);
            }

            if (e.Data?.Contains("Starting a counter session", StringComparison.Ordinal) == true)
            {
                started.TrySetResult();
            }
        };
        counters.ErrorDataReceived += (_, e) => { lock (log) { log.AppendLine(e.Data); } };
        counters.BeginOutputReadLine();
        counters.BeginErrorReadLine();
        try
        {
            await started.Task.WaitAsync(TimeSpan.FromSeconds(20), ct);
            await Task.Delay(TimeSpan.FromSeconds(2.5), ct); // the first collection only sets dotnet-counters' baseline

            double before = (await sample.CountsAsync(client))[Key];
            const int N = 400;
            await Parallel.ForAsync(0, N, new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = ct }, async (i, token) =>
            {
                using HttpResponseMessage r = await client.GetAsync("/items/" + i, token);
            });
            double after = (await sample.CountsAsync(client))[Key];

            await counters.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(30), ct);
            Assert.True(counters.ExitCode == 0, "dotnet-counters failed:\n" + log);

            using JsonDocument doc = JsonDocument.Parse(await File.ReadAllTextAsync(output, ct));
            double seen = doc.RootElement.GetProperty("Events").EnumerateArray()
                .Where(e => e.GetProperty("name").GetString()!.StartsWith("http.server.request.duration.count", StringComparison.Ordinal)
                    && e.GetProperty("tags").GetString()!.Contains("http.route=/items/{id:int}", StringComparison.Ordinal)
                    && e.GetProperty("tags").GetString()!.Contains("http.response.status_code=200", StringComparison.Ordinal))
                .Sum(e => e.GetProperty("value").GetDouble());

            // The load ran between two quiet moments inside the collection, so the rates dotnet-counters reported add up
            // to exactly the increase the scrape saw (the scrapes themselves are excluded from the metrics).
            Assert.Equal(N, after - before);
            Assert.Equal(after - before, seen);
        }
        finally
        {
            if (!counters.HasExited)
            {
                counters.Kill(entireProcessTree: true);
            }

            File.Delete(output);
        }
    }
}
