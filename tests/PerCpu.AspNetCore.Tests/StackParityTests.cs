using System.Diagnostics;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// A team moving from the OpenTelemetry stack must see the same request numbers: one app (tests/StackParityApp) run
/// twice, one process on PerCpu's defaults and one on the OpenTelemetry SDK with <c>AddAspNetCoreInstrumentation()</c>
/// and its Prometheus exporter, the same traffic through real Kestrel, and every series of
/// <c>http_server_request_duration_seconds</c> compared label for label, count for count.
/// </summary>
public sealed class StackParityTests(StackParityTests.Apps apps) : IClassFixture<StackParityTests.Apps>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>The two processes, started once for this class.</summary>
    public sealed class Apps : IAsyncLifetime
    {
        internal SampleProcess PerCpu { get; private set; } = null!;

        internal SampleProcess OpenTelemetry { get; private set; } = null!;

        public async ValueTask InitializeAsync()
        {
            Task<SampleProcess> percpu = SampleProcess.StartParityAppAsync("percpu");
            Task<SampleProcess> otel = SampleProcess.StartParityAppAsync("otel");
            PerCpu = await percpu;
            OpenTelemetry = await otel;
        }

        public async ValueTask DisposeAsync()
        {
            await PerCpu.DisposeAsync();
            await OpenTelemetry.DisposeAsync();
        }
    }

    /// <summary>
    /// One row per naming rule (the instruments of tests/StackParityApp's <c>Parity.Units</c> meter): the family's
    /// name in the 0.0.4 text format, and its OpenMetrics <c>TYPE</c> and <c>UNIT</c> lines, exactly as the OpenTelemetry
    /// Prometheus exporter writes them for the same instrument.
    /// </summary>
    [Theory]
    [InlineData("parity_requests", "annotation only: no unit suffix")]
    [InlineData("parity_sent_bytes", "By is bytes, then _total")]
    [InlineData("parity_errors", "unit 1 on a counter: no suffix")]
    [InlineData("parity_jobs", "a name that already ends in _total")]
    [InlineData("parity_total_orders", "total inside the name")]
    [InlineData("parity_busy_time_seconds", "s on a counter")]
    [InlineData("parity_stock_fill", "unit 1 on a gauge: no _ratio")]
    [InlineData("parity_fill_ratio", "unit 1, a name ending in ratio: no UNIT")]
    [InlineData("parity_throughput_bytes_per_second", "a rate unit")]
    [InlineData("parity_cpu_percent", "percent")]
    [InlineData("parity_temperature_celsius", "celsius")]
    [InlineData("parity_per_unit_per_second", "an annotation per second")]
    [InlineData("parity_queue_depth", "an up-down counter")]
    [InlineData("parity_cache_size_kibibytes", "KiBy")]
    [InlineData("parity_latency_milliseconds", "ms on a histogram")]
    [InlineData("parity_wait_seconds", "a name that already holds its unit")]
    [InlineData("parity_payload_bytes", "bytes on a histogram")]
    [InlineData("parity_cpu_time_seconds", "an observable counter")]
    [InlineData("parity_connections", "an observable up-down counter")]
    public async Task UnitAndSuffixRules_SameNamesAsTheOpenTelemetryExporter(string family, string rule)
    {
        Assert.False(string.IsNullOrEmpty(rule));
        (string Text, string OpenMetrics) ours = await FamilyLinesAsync(apps.PerCpu, family);
        (string Text, string OpenMetrics) theirs = await FamilyLinesAsync(apps.OpenTelemetry, family);
        Assert.NotEqual("", theirs.Text); // the exporter has this family under this name
        Assert.Equal(theirs, ours);
    }

    /// <summary>The family's <c># TYPE</c> line in the text format, and its <c># TYPE</c> and <c># UNIT</c> lines in OpenMetrics.</summary>
    private static async Task<(string Text, string OpenMetrics)> FamilyLinesAsync(SampleProcess app, string family)
    {
        using var client = new HttpClient { BaseAddress = app.BaseAddress };
        string text = await client.GetStringAsync("/metrics", Ct);
        using var request = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        request.Headers.Accept.ParseAdd("application/openmetrics-text; version=1.0.0");
        using HttpResponseMessage response = await client.SendAsync(request, Ct);
        string openMetrics = await response.Content.ReadAsStringAsync(Ct);
        static string Lines(string scrape, string prefix, params string[] kinds) => string.Join("\n", scrape.Split('\n')
            .Where(l => kinds.Any(k => l.StartsWith($"# {k} {prefix} ", StringComparison.Ordinal) || l == $"# {k} {prefix}")));
        string textName = text.Split('\n').FirstOrDefault(l => l.StartsWith($"# TYPE {family} ", StringComparison.Ordinal) || l.StartsWith($"# TYPE {family}_total ", StringComparison.Ordinal)) ?? "";
        return (textName, Lines(openMetrics, family, "TYPE", "UNIT"));
    }

    [Fact]
    public async Task OneTrafficMix_BothStacks_EverySeriesSameLabelsAndCount()
    {
        SampleProcess percpu = apps.PerCpu;
        SampleProcess otel = apps.OpenTelemetry;

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
