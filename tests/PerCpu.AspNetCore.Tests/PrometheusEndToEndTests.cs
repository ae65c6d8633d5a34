using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// A real Prometheus server (Debian's package; eng/test.sh installs it) scrapes the sample every second while a known
/// load runs; its HTTP API must then report exactly the requests sent, and sane quantiles and rates.
/// </summary>
public sealed class PrometheusEndToEndTests
{
    private const int SlowMs = 60;

    [Fact]
    public async Task PrometheusServer_ScrapingTheSample_SeesEveryRequestAndSaneQuantilesAndRates()
    {
        CancellationToken ct = TestContext.Current.CancellationToken;
        await using SampleProcess sample = await SampleProcess.StartAsync(new Dictionary<string, string> { ["Sample__SlowMilliseconds"] = SlowMs.ToString(CultureInfo.InvariantCulture) });
        await using PrometheusServer prometheusServer = await PrometheusServer.StartAsync(sample.Port, ct, "--enable-feature=exemplar-storage");
        HttpClient api = prometheusServer.Api;
        System.Text.StringBuilder log = prometheusServer.Log;

        // A known load over 10 seconds: fast, 404 and slow requests.
        using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 32 }) { BaseAddress = sample.BaseAddress };
        int sent = 0, slowSent = 0;
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Parallel.ForAsync(0, 200, new ParallelOptions { MaxDegreeOfParallelism = 32, CancellationToken = ct }, async (i, token) =>
            {
                string path = (i % 10) switch { 0 => "/slow", 1 => "/missing/" + i, _ => "/items/" + i };
                using HttpResponseMessage r = await client.GetAsync(path, token);
            });
            sent += 200;
            slowSent += 20;
        }

        // Prometheus must see exactly what was sent (it scrapes every second; the scrapes themselves are excluded).
        await Until(async () => await Query(api, "sum(http_server_request_duration_seconds_count{job=\"sample\"})") == sent, TimeSpan.FromSeconds(20),
            $"Prometheus's request total never reached {sent}", log);
        Assert.Equal(slowSent, await Query(api, "sum(http_server_request_duration_seconds_count{http_route=\"/slow\"})"));

        double p99 = await Query(api, "histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{http_route=\"/slow\"}[30s])))");
        Assert.InRange(p99, SlowMs / 1000.0, 0.25); // at least the configured delay; well under the next buckets
        double rate = await Query(api, "sum(rate(http_server_request_duration_seconds_count{job=\"sample\"}[30s]))");
        Assert.InRange(rate, 1, sent); // positive, and no more than everything in one second
        double overflow = await Query(api, "sum(percpu_series_overflow_records_total)");
        Assert.Equal(0, overflow);

        // The app's own metric (the shop's Meter), the runtime's, and the ASP.NET Core metrics that the ASP.NET Core
        // team's Grafana dashboards query, all through PerCpu's /metrics.
        for (int i = 0; i < 10; i++)
        {
            using HttpResponseMessage r = await client.PostAsync("/checkout", new StringContent("{\"region\":\"eu\",\"items\":1}", System.Text.Encoding.UTF8, "application/json"), ct);
            Assert.Equal(System.Net.HttpStatusCode.Created, r.StatusCode);
        }

        for (int i = 0; i < 3; i++)
        {
            using HttpResponseMessage r = await client.GetAsync("/error", ct);
            Assert.Equal(System.Net.HttpStatusCode.InternalServerError, r.StatusCode);
        }

        await Until(async () => await Query(api, "sum(shop_orders_total{region=\"eu\"})") == 10, TimeSpan.FromSeconds(20), "Prometheus never saw the 10 orders", log);
        Assert.Equal(10, await Query(api, "sum(shop_checkout_duration_seconds_count)"));
        await Until(async () => await Query(api, "sum(aspnetcore_diagnostics_exceptions_total)") == 3, TimeSpan.FromSeconds(20), "Prometheus never saw the 3 handled exceptions", log);
        Assert.Equal(3, await Query(api, "sum(http_server_request_duration_seconds_count{error_type!=\"\"})"));
        Assert.True(await Query(api, "sum(dotnet_gc_heap_total_allocated_bytes_total)") > 0);
        Assert.True(await Query(api, "sum(dotnet_process_cpu_count)") >= 1);
        Assert.True(await Query(api, "sum(aspnetcore_routing_match_attempts_total)") >= sent);
        Assert.True(await Query(api, "count(kestrel_active_connections)") >= 1);
        Assert.True(await Query(api, "count(kestrel_queued_connections)") >= 1);
        Assert.True(await Query(api, "count(http_server_active_requests)") >= 1);
        Assert.True(await Query(api, "histogram_quantile(0.5, sum(rate(http_server_request_duration_seconds_bucket[1m])) by (le))") > 0);

        // Exemplars through the OpenMetrics scrape (what Prometheus asks for without native histograms): requests with a
        // sampled traceparent leave them, on the classic _bucket series.
        HashSet<string> traces = await SendTraced(client, "/items/7", 20, ct);
        await Until(async () => (await Exemplars(api, "http_server_request_duration_seconds_bucket")).Count > 0, TimeSpan.FromSeconds(20), "Prometheus stored no exemplar from the OpenMetrics scrape", log);
        List<(string Series, string TraceId, double Value)> exemplars = await Exemplars(api, "http_server_request_duration_seconds_bucket");
        Assert.All(exemplars, e => Assert.Contains(e.TraceId, traces));
        Assert.All(exemplars, e => Assert.InRange(e.Value, 0, 10));
    }

    /// <summary>Sends <paramref name="n"/> requests, each with its own sampled W3C traceparent; returns the trace ids.</summary>
    private static async Task<HashSet<string>> SendTraced(HttpClient client, string path, int n, CancellationToken ct)
    {
        HashSet<string> traces = [];
        for (int i = 0; i < n; i++)
        {
            string trace = ActivityTraceId.CreateRandom().ToHexString();
            traces.Add(trace);
            using var request = new HttpRequestMessage(HttpMethod.Get, path);
            request.Headers.TryAddWithoutValidation("traceparent", $"00-{trace}-{ActivitySpanId.CreateRandom().ToHexString()}-01");
            using HttpResponseMessage response = await client.SendAsync(request, ct);
            response.EnsureSuccessStatusCode();
        }

        return traces;
    }

    /// <summary>/api/v1/query_exemplars over the last 10 minutes: (series, trace_id, value) of each exemplar.</summary>
    private static async Task<List<(string Series, string TraceId, double Value)>> Exemplars(HttpClient api, string query)
    {
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        string? body = await TryGet(api, $"/api/v1/query_exemplars?query={Uri.EscapeDataString(query)}&start={now - 600}&end={now + 60}");
        var found = new List<(string, string, double)>();
        if (body is null)
        {
            return found;
        }

        using JsonDocument doc = JsonDocument.Parse(body);
        foreach (JsonElement series in doc.RootElement.GetProperty("data").EnumerateArray())
        {
            string name = series.GetProperty("seriesLabels").ToString();
            foreach (JsonElement e in series.GetProperty("exemplars").EnumerateArray())
            {
                found.Add((name, e.GetProperty("labels").GetProperty("trace_id").GetString()!, double.Parse(e.GetProperty("value").GetString()!, CultureInfo.InvariantCulture)));
            }
        }

        return found;
    }

    [Fact]
    public async Task PrometheusServer_WithNativeHistograms_ScrapesProtobuf_NativeQueriesMatchTheRequests()
    {
        CancellationToken ct = TestContext.Current.CancellationToken;
        await using SampleProcess sample = await SampleProcess.StartAsync(new Dictionary<string, string> { ["Sample__SlowMilliseconds"] = "100" });
        await using PrometheusServer prometheusServer = await PrometheusServer.StartAsync(sample.Port, ct, "--enable-feature=native-histograms,exemplar-storage");
        HttpClient api = prometheusServer.Api;
        System.Text.StringBuilder log = prometheusServer.Log;

        using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 16 }) { BaseAddress = sample.BaseAddress };
        const int Slow = 40, Fast = 160;
        // Every request carries its own sampled W3C traceparent (the sample traces those), so each may leave an exemplar.
        var traces = new System.Collections.Concurrent.ConcurrentDictionary<string, bool>();
        async Task Send(int slow, int fast) => await Parallel.ForAsync(0, slow + fast, new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = ct }, async (i, token) =>
        {
            string trace = ActivityTraceId.CreateRandom().ToHexString();
            traces[trace] = i < slow;
            using var request = new HttpRequestMessage(HttpMethod.Get, i < slow ? "/slow?ms=100" : "/items/" + i);
            request.Headers.TryAddWithoutValidation("traceparent", $"00-{trace}-{ActivitySpanId.CreateRandom().ToHexString()}-01");
            using HttpResponseMessage r = await client.SendAsync(request, token);
            r.EnsureSuccessStatusCode();
        });

        // One request per route first, so both series exist in Prometheus before the counted load (an increase is
        // measured between samples of a series).
        await Send(1, 1);
        string total = "sum(histogram_count(http_server_request_duration_seconds{job=\"sample\"}))";
        await Until(async () => await Query(api, total) == 2, TimeSpan.FromSeconds(20), "Prometheus never saw the first 2 requests", log);
        await Send(Slow, Fast);

        // histogram_count works only on native histograms: a value here proves Prometheus ingested PerCpu's.
        await Until(async () => await Query(api, total) == 2 + Slow + Fast, TimeSpan.FromSeconds(20), $"Prometheus's native histogram count never reached {2 + Slow + Fast}", log);
        Assert.Equal(1 + Slow, await Query(api, "sum(histogram_count(http_server_request_duration_seconds{http_route=\"/slow\"}))"));
        double increase = await Query(api, "sum(histogram_count(increase(http_server_request_duration_seconds{job=\"sample\"}[1m])))");
        Assert.InRange(increase, Slow + Fast, (Slow + Fast) * 2.0); // Prometheus extrapolates an increase over the window

        // The p99 of /slow?ms=100 from the native buckets: within the layout's relative error (4.3% at scale 3) of the
        // true values, which lie between 100 ms and 100 ms plus scheduling delay on this machine.
        double p99 = await Query(api, "histogram_quantile(0.99, sum(http_server_request_duration_seconds{http_route=\"/slow\"}))");
        Assert.InRange(p99, 0.1 * (1 - 0.0433), 0.25);

        // Exemplars from the protobuf scrape: Prometheus 2.42 keeps them on the native histogram series. Each names a
        // trace that was sent, and an exemplar of /slow holds a value near 100 ms or more (Task.Delay may wake up to a
        // millisecond early: 99.46 ms was seen).
        await Until(async () => (await Exemplars(api, "http_server_request_duration_seconds{http_route=\"/slow\"}")).Count > 0, TimeSpan.FromSeconds(20), "Prometheus stored no exemplar from the protobuf scrape", log);
        List<(string Series, string TraceId, double Value)> exemplars = await Exemplars(api, "http_server_request_duration_seconds");
        Assert.All(exemplars, e => Assert.True(traces.ContainsKey(e.TraceId), $"exemplar trace {e.TraceId} was never sent"));
        Assert.All(exemplars.Where(e => e.Series.Contains("/slow", StringComparison.Ordinal)), e => Assert.True(e.Value >= 0.09 && traces[e.TraceId], $"/slow exemplar {e.Value} of trace {e.TraceId}"));
    }

    /// <summary>Debian's Prometheus server scraping the sample every second, on a free port, with its own data folder.</summary>
    internal sealed class PrometheusServer : IAsyncDisposable
    {
        private readonly Process _process;
        private readonly string _dir;

        private PrometheusServer(Process process, string dir, int port)
        {
            _process = process;
            _dir = dir;
            Api = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(5) };
        }

        public HttpClient Api { get; }

        public System.Text.StringBuilder Log { get; } = new();

        /// <summary>Starts it and waits until it has scraped the sample once; skips where Prometheus is not installed.</summary>
        public static async Task<PrometheusServer> StartAsync(int samplePort, CancellationToken ct, params string[] extraArguments)
        {
            string? prometheus = new[] { "/usr/bin/prometheus", "/usr/local/bin/prometheus" }.FirstOrDefault(File.Exists);
            if (prometheus is null)
            {
                Assert.True(Environment.GetEnvironmentVariable("PERCPU_REQUIRE_TOOLS") != "1", "the prometheus server is required here (eng/test.sh installs Debian's prometheus package) but was not found");
                Assert.Skip("prometheus not found; eng/test.sh installs Debian's prometheus package");
            }

            string dir = Directory.CreateTempSubdirectory("percpu-prometheus-").FullName;
            int port = SampleProcess.FreePort();
            await File.WriteAllTextAsync(Path.Combine(dir, "prometheus.yml"), $"""
                global:
                  scrape_interval: 1s
                  scrape_timeout: 900ms
                scrape_configs:
                  - job_name: sample
                    static_configs:
                      - targets: ["127.0.0.1:{samplePort}"]
                """, ct);
            var psi = new ProcessStartInfo(prometheus) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (string a in new[] { $"--config.file={dir}/prometheus.yml", $"--storage.tsdb.path={dir}/data", $"--web.listen-address=127.0.0.1:{port}", "--log.level=warn" }.Concat(extraArguments))
            {
                psi.ArgumentList.Add(a);
            }

            var server = new PrometheusServer(Process.Start(psi)!, dir, port);
            server._process.OutputDataReceived += (_, e) => { lock (server.Log) { server.Log.AppendLine(e.Data); } };
            server._process.ErrorDataReceived += (_, e) => { lock (server.Log) { server.Log.AppendLine(e.Data); } };
            server._process.BeginOutputReadLine();
            server._process.BeginErrorReadLine();
            await Until(async () => (await TryGet(server.Api, "/-/ready")) is not null, TimeSpan.FromSeconds(30), "Prometheus did not become ready", server.Log);
            await Until(async () => await Query(server.Api, "up{job=\"sample\"}") == 1, TimeSpan.FromSeconds(30), "Prometheus never scraped the sample", server.Log);
            return server;
        }

        public async ValueTask DisposeAsync()
        {
            Api.Dispose();
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None);
            _process.Dispose();
            try
            {
                Directory.Delete(_dir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    internal static async Task<double> Query(HttpClient api, string promql)
    {
        string? body = await TryGet(api, "/api/v1/query?query=" + Uri.EscapeDataString(promql));
        if (body is null)
        {
            return double.NaN;
        }

        using JsonDocument doc = JsonDocument.Parse(body);
        JsonElement result = doc.RootElement.GetProperty("data").GetProperty("result");
        return result.GetArrayLength() == 0 ? double.NaN : double.Parse(result[0].GetProperty("value")[1].GetString()!, CultureInfo.InvariantCulture);
    }

    internal static async Task<string?> TryGet(HttpClient api, string path)
    {
        try
        {
            using HttpResponseMessage r = await api.GetAsync(path);
            return r.IsSuccessStatusCode ? await r.Content.ReadAsStringAsync() : null;
        }
        catch (HttpRequestException)
        {
            return null;
        }
        catch (TaskCanceledException)
        {
            return null;
        }
    }

    private static async Task Until(Func<Task<bool>> condition, TimeSpan limit, string message, System.Text.StringBuilder log)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < limit)
        {
            if (await condition())
            {
                return;
            }

            await Task.Delay(250);
        }

        string text;
        lock (log)
        {
            text = log.ToString();
        }

        Assert.Fail($"{message} within {limit.TotalSeconds} s. Prometheus log:\n{text}");
    }
}
