using System.Diagnostics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace PerCpu.AspNetCore.Tests;

public sealed class ExpositionTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task TextFormat_HasHelpTypeAndContentType_AndParses()
    {
        await using TestApp app = await TestApp.StartAsync();
        await Traffic(app);

        using HttpResponseMessage r = await app.Client.GetAsync("/metrics", Ct);
        string body = await r.Content.ReadAsStringAsync(Ct);

        Assert.Equal("text/plain; version=0.0.4; charset=utf-8", r.Content.Headers.ContentType!.ToString());
        Scrape scrape = Scrape.Parse(body);
        Assert.Contains("# TYPE http_server_request_duration_seconds histogram", scrape.Comments);
        Assert.Contains("# TYPE http_server_active_requests gauge", scrape.Comments);
        Assert.Contains("# TYPE percpu_series_overflow_records_total counter", scrape.Comments);
        Assert.DoesNotContain(scrape.Comments, c => c.StartsWith("# UNIT", StringComparison.Ordinal) || c == "# EOF");
        Assert.Contains(scrape.Named("http_server_request_duration_seconds_bucket"), s => s.Labels["le"] == "0.005");
        Assert.Single(scrape.Named("percpu_processor_id_strategy"), s => s.Labels["strategy"] == ProcessorId.Strategy.ToString() && s.Labels["write_path"] == ProcessorId.WritePath.ToString());
    }

    [Fact]
    public async Task OpenMetrics_ChosenByAccept_HasUnitTotalAndEof()
    {
        await using TestApp app = await TestApp.StartAsync();
        await Traffic(app);

        using var request = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        request.Headers.Accept.ParseAdd("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5");
        using HttpResponseMessage r = await app.Client.SendAsync(request, Ct);
        string body = await r.Content.ReadAsStringAsync(Ct);

        Assert.StartsWith("application/openmetrics-text", r.Content.Headers.ContentType!.ToString(), StringComparison.Ordinal);
        Assert.EndsWith("# EOF\n", body, StringComparison.Ordinal);
        Scrape scrape = Scrape.Parse(body);
        Assert.Contains("# UNIT http_server_request_duration_seconds seconds", scrape.Comments);
        Assert.Contains("# TYPE percpu_series_overflow_records counter", scrape.Comments);
        Assert.Single(scrape.Named("percpu_series_overflow_records_total"));
        // Every family's samples are contiguous and announced by a TYPE line.
        var typed = scrape.Comments.Where(c => c.StartsWith("# TYPE ", StringComparison.Ordinal)).Select(c => c.Split(' ')[2]).ToHashSet();
        Assert.All(scrape.Samples, s => Assert.Contains(typed, t => s.Name == t || s.Name.StartsWith(t + "_", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task LabelValues_AreEscaped()
    {
        await using TestApp app = await TestApp.StartAsync(o => o.UnmatchedRoute = "no \"route\" \\ here");
        using (await app.Client.GetAsync("/not/mapped", Ct))
        {
        }

        Scrape scrape = await app.ScrapeAsync();
        Assert.Contains("http_route=\"no \\\"route\\\" \\\\ here\"", scrape.Text, StringComparison.Ordinal);
        Assert.Contains(scrape.Named("http_server_request_duration_seconds_count"), s => s.Labels["http_route"] == "no \"route\" \\ here");
    }

    [Fact]
    public async Task Promtool_CheckMetrics_PassesOnRealScrape()
    {
        await using TestApp app = await TestApp.StartAsync(o => o.UnmatchedRoute = "un\"matched");
        await Traffic(app);
        Scrape scrape = await app.ScrapeAsync();
        await AssertPromtoolAccepts(scrape.Text);
    }

    /// <summary>
    /// Runs <c>promtool check metrics</c> on the 0.0.4 text format (promtool 2.42 reads no OpenMetrics). Parse errors always fail. Of the lint rules, only one is tolerated, and only for
    /// names that .NET's own instruments give under OpenTelemetry's naming rules (<c>dotnet.assembly.count</c> becomes
    /// <c>dotnet_assembly_count</c>, a gauge, exactly as the OpenTelemetry Prometheus exporter names it): the
    /// <c>_count</c> suffix on a gauge. PerCpu's own names must pass every rule.
    /// </summary>
    /// <param name="text">The scrape.</param>
    /// <param name="lintAllowed">Accept any lint complaint (exit 3), for names the test's app chose; parse errors still fail.</param>
    internal static async Task AssertPromtoolAccepts(string text, bool lintAllowed = false)
    {
        string? promtool = FindPromtool();
        if (promtool is null)
        {
            Assert.True(Environment.GetEnvironmentVariable("PERCPU_REQUIRE_TOOLS") != "1", "promtool is required here (eng/test.sh installs Debian's prometheus package) but was not found");
            Assert.Skip("promtool not found; eng/test.sh installs it (Debian package prometheus)");
        }

        var psi = new ProcessStartInfo(promtool, "check metrics") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using Process p = Process.Start(psi)!;
        await p.StandardInput.WriteAsync(text);
        p.StandardInput.Close();
        string output = await p.StandardOutput.ReadToEndAsync(Ct) + await p.StandardError.ReadToEndAsync(Ct);
        await p.WaitForExitAsync(Ct);
        string[] problems = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        bool onlyTolerated = p.ExitCode == 3 && problems.Length > 0 && problems.All(l =>
            l.EndsWith("non-histogram and non-summary metrics should not have \"_count\" suffix", StringComparison.Ordinal)
            && l.StartsWith("dotnet_", StringComparison.Ordinal));
        Assert.True(p.ExitCode == 0 || onlyTolerated || (lintAllowed && p.ExitCode == 3), $"promtool check metrics failed (exit {p.ExitCode}):\n" + output + "\n--- scrape ---\n" + text);
    }

    [Fact]
    public async Task ConcurrentScrapesWhileWriting_AllParseAndCountsNeverDecrease()
    {
        await using TestApp app = await TestApp.StartAsync();
        using var stop = new CancellationTokenSource();
        Task writers = Parallel.ForAsync(0, 4_000, new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = Ct }, async (i, ct) =>
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/items/" + (i % 10), ct);
        });

        double previous = 0;
        var scrapers = Enumerable.Range(0, 4).Select(async _ =>
        {
            double last = 0;
            while (!writers.IsCompleted)
            {
                Scrape s = await app.ScrapeAsync();
                double count = s.Named("http_server_request_duration_seconds_count").Sum(x => x.Value);
                Assert.True(count >= last, "a later scrape never sees fewer requests");
                last = count;
            }

            return last;
        }).ToArray();

        await writers;
        await Task.WhenAll(scrapers);
        previous = (await app.ScrapeAsync()).Named("http_server_request_duration_seconds_count").Sum(x => x.Value);
        Assert.Equal(4_000, previous);
    }

    internal static async Task Traffic(TestApp app)
    {
        foreach (string path in new[] { "/items/1", "/items/2", "/status/404", "/status/500", "/nowhere", "/throw" })
        {
            using HttpResponseMessage r = await app.Client.GetAsync(path, Ct);
        }

        using HttpResponseMessage post = await app.Client.PostAsync("/echo", new StringContent("hello"), Ct);
    }

    /// <summary>
    /// Parses OpenMetrics text with the OpenMetrics parser of the Prometheus Python client (Debian's
    /// python3-prometheus-client, tests/openmetrics-parser/parse.py), which enforces what promtool 2.42 cannot read:
    /// <c># EOF</c>, <c>_total</c> samples, escaped <c># HELP</c>, unique label names. Returns the families it read.
    /// </summary>
    internal static async Task<System.Text.Json.JsonElement> AssertOpenMetricsParses(string text)
    {
        const string Python = "/usr/bin/python3";
        bool present = File.Exists(Python) && Directory.Exists("/usr/lib/python3/dist-packages/prometheus_client");
        if (!present)
        {
            Assert.True(Environment.GetEnvironmentVariable("PERCPU_REQUIRE_TOOLS") != "1", "the Prometheus Python client is required here (eng/test.sh installs Debian's python3-prometheus-client) but was not found");
            Assert.Skip("python3-prometheus-client not found; eng/test.sh installs it");
        }

        string script = Path.Combine(OtlpReceiver.RepositoryRoot(), "tests", "openmetrics-parser", "parse.py");
        var psi = new ProcessStartInfo(Python, script) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment.Remove("PYTHONPATH");
        using Process p = Process.Start(psi)!;
        await p.StandardInput.WriteAsync(text);
        p.StandardInput.Close();
        Task<string> stdout = p.StandardOutput.ReadToEndAsync(Ct), stderr = p.StandardError.ReadToEndAsync(Ct);
        await p.WaitForExitAsync(Ct);
        Assert.True(p.ExitCode == 0, $"the OpenMetrics parser rejected the scrape (exit {p.ExitCode}): {await stderr}\n--- scrape ---\n{text}");
        return System.Text.Json.JsonDocument.Parse(await stdout).RootElement.Clone();
    }

    internal static string? FindPromtool() =>
        new[] { "/usr/bin/promtool", "/usr/local/bin/promtool" }.FirstOrDefault(File.Exists)
        ?? Environment.GetEnvironmentVariable("PATH")?.Split(':').Select(d => Path.Combine(d, "promtool")).FirstOrDefault(File.Exists);
}

/// <summary>How the scrape travels: the format by q-value, gzip when asked, and a warning when another endpoint shares its path.</summary>
public sealed class ScrapeTransportTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    // What Prometheus 2.42 sends by default, and with --enable-feature=native-histograms (protobuf first: PerCpu does
    // not write it, so OpenMetrics, the next preference).
    [InlineData("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", true)]
    [InlineData("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.1,application/openmetrics-text;version=1.0.0;q=0.8,text/plain;version=0.0.4;q=0.5", true)]
    [InlineData("application/openmetrics-text;q=0.5,text/plain;q=1", false)]
    [InlineData("text/plain;q=0.2, application/openmetrics-text; version=1.0.0; q=0.9", true)]
    [InlineData("application/openmetrics-text", true)]
    [InlineData("application/openmetrics-text;version=2.0.0", false)]
    [InlineData("application/openmetrics-text;q=0", false)]
    [InlineData("text/plain", false)]
    [InlineData("*/*", false)]
    [InlineData("", false)]
    [InlineData(null, false)]
    [InlineData(";;;,,,=q=;application/openmetrics-text;q=abc", false)]
    [InlineData("application/openmetrics-text;q=7", false)]
    public void Accept_QValuesChooseTheFormat(string? accept, bool openMetrics) =>
        Assert.Equal(openMetrics, PerCpu.AspNetCore.Internal.Exposition.WantsOpenMetrics(accept));

    [Theory]
    [InlineData("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "Protobuf")]
    [InlineData("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text", "Text")]
    [InlineData("application/vnd.google.protobuf;proto=other.Message;encoding=delimited,text/plain;q=0.5", "Text")]
    [InlineData("application/openmetrics-text;version=1.0.0", "OpenMetrics")]
    public void Accept_ProtobufOnlyForDelimitedMetricFamilies(string accept, string format) =>
        Assert.Equal(format, PerCpu.AspNetCore.Internal.Exposition.Negotiate(accept).ToString());

    [Theory]
    [InlineData(null)]
    [InlineData(1)]
    public async Task Protobuf_DecodedByAReferenceDecoder_MatchesTheSnapshotsBucketForBucket(int? nativeScale)
    {
        await using TestApp app = await TestApp.StartAsync(o => o.NativeHistogramScale = nativeScale);
        await ExpositionTests.Traffic(app);
        using var request = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        request.Headers.TryAddWithoutValidation("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8");
        using HttpResponseMessage response = await app.Client.SendAsync(request, Ct);
        Assert.StartsWith("application/vnd.google.protobuf", response.Content.Headers.ContentType!.ToString(), StringComparison.Ordinal);
        byte[] body = await response.Content.ReadAsByteArrayAsync(Ct);
        System.Text.Json.JsonElement families = DecodeProtobuf(body);

        var store = app.App.Services.GetRequiredService<PerCpu.AspNetCore.Internal.HttpMetricsStore>();
        var expected = store.RecordedSeries().Where(x => !x.IsOverflow).ToDictionary(
            x => $"{x.Route ?? (x.Unhandled ? "unhandled" : "-")} {x.Method} {x.Status}{(x.ErrorType is null ? "" : " " + x.ErrorType)}", x => x.Duration.Snapshot());
        System.Text.Json.JsonElement duration = families.EnumerateArray().Single(f => f.GetProperty("name").GetString() == "http_server_request_duration_seconds");
        Assert.Equal("HISTOGRAM", duration.GetProperty("type").GetString());
        Assert.Equal("seconds", duration.GetProperty("unit").GetString());
        int compared = 0, nativeBuckets = 0;
        foreach (System.Text.Json.JsonElement metric in duration.GetProperty("metric").EnumerateArray())
        {
            var labels = metric.GetProperty("label").EnumerateArray().ToDictionary(l => l.GetProperty("name").GetString()!, l => l.GetProperty("value").GetString()!);
            HistogramSnapshot snap = expected[$"{Scrape.RouteOf(labels)} {labels["http_request_method"]} {labels["http_response_status_code"]}{(labels.TryGetValue("error_type", out string? e) ? " " + e : "")}"];
            if (nativeScale is int scale)
            {
                snap = snap.Downscale(scale); // what the option exposes: the same records in coarser buckets
                Assert.Equal(scale, metric.GetProperty("histogram").GetProperty("schema").GetInt32());
            }

            System.Text.Json.JsonElement h = metric.GetProperty("histogram");
            Assert.Equal(snap.Count, long.Parse(h.GetProperty("sampleCount").GetString()!, System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(snap.Sum, h.GetProperty("sampleSum").GetDouble());
            Assert.Equal(snap.Scale, h.GetProperty("schema").GetInt32());
            Assert.Equal(Math.ScaleB(1, snap.MinExponent), h.GetProperty("zeroThreshold").GetDouble());
            Assert.Equal(snap.ZeroCount + snap.Underflow, long.Parse(h.GetProperty("zeroCount").GetString()!, System.Globalization.CultureInfo.InvariantCulture));

            // Classic buckets: the snapshot's cumulative counts, then +Inf.
            long[] classic = [.. h.GetProperty("bucket").EnumerateArray().Select(b => long.Parse(b.GetProperty("cumulativeCount").GetString()!, System.Globalization.CultureInfo.InvariantCulture))];
            Assert.Equal([.. snap.CumulativeCounts, snap.Count], classic);

            // Native buckets: rebuild absolute Prometheus indexes from the spans and deltas; each is PerCpu's index + 1.
            var native = new Dictionary<int, long>();
            int index = 0;
            long count = 0;
            int d = 0;
            System.Text.Json.JsonElement[] deltas = [.. h.GetProperty("positiveDelta").EnumerateArray()];
            bool firstSpan = true;
            foreach (System.Text.Json.JsonElement span in h.GetProperty("positiveSpan").EnumerateArray())
            {
                index = firstSpan ? span.GetProperty("offset").GetInt32() : index + span.GetProperty("offset").GetInt32();
                firstSpan = false;
                for (int i = 0; i < span.GetProperty("length").GetInt32(); i++, index++)
                {
                    count += long.Parse(deltas[d++].GetString()!, System.Globalization.CultureInfo.InvariantCulture);
                    if (count != 0)
                    {
                        native[index] = count;
                    }
                }
            }

            Assert.Equal(deltas.Length, d);
            var reference = new Dictionary<int, long>();
            for (int i = 0; i < snap.ExponentialCounts.Count; i++)
            {
                if (snap.ExponentialCounts[i] != 0)
                {
                    reference[snap.Offset + i + 1] = snap.ExponentialCounts[i];
                }
            }

            Assert.Equal(reference.OrderBy(x => x.Key), native.OrderBy(x => x.Key));
            Assert.Equal(snap.Count - snap.ZeroCount - snap.Underflow, native.Values.Sum()); // the overflow bucket included
            nativeBuckets += native.Count;
            compared++;
        }

        Assert.Equal(expected.Count, compared);
        Assert.True(nativeBuckets > 0, "no native bucket held a request");
        Assert.Contains(families.EnumerateArray(), f => f.GetProperty("name").GetString() == "percpu_series_overflow_records_total" && f.GetProperty("type").GetString() == "COUNTER");
        Assert.Contains(families.EnumerateArray(), f => f.GetProperty("name").GetString() == "http_server_active_requests" && f.GetProperty("type").GetString() == "GAUGE");
    }

    [Theory]
    [InlineData(1e15)] // 2^49.8 s, far above the default layout's 2^8
    [InlineData(1e300)] // so far above that the schema is lowered to keep the spans small
    public void NativeHistogram_ValueAboveTheRange_LandsInTheBucketThatHoldsIt(double big)
    {
        var registry = new PerCpu.Families.MetricRegistry();
        PerCpuHistogram h = registry.CreateHistogram("job.duration", "s").WithLabels();
        h.Record(0.02);
        h.Record(big);
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        var writer = new PerCpu.AspNetCore.Internal.PrometheusProtobufWriter(buffer);
        registry.Collect(writer);
        writer.Finish();

        System.Text.Json.JsonElement native = DecodeProtobuf(buffer.WrittenSpan.ToArray()).EnumerateArray()
            .Single(f => f.GetProperty("name").GetString() == "job_duration_seconds").GetProperty("metric")[0].GetProperty("histogram");
        int schema = native.GetProperty("schema").GetInt32();
        int index = 0, highest = int.MinValue;
        long count = 0, total = 0;
        System.Text.Json.JsonElement[] deltas = [.. native.GetProperty("positiveDelta").EnumerateArray()];
        int d = 0;
        foreach (System.Text.Json.JsonElement span in native.GetProperty("positiveSpan").EnumerateArray())
        {
            index = d == 0 ? span.GetProperty("offset").GetInt32() : index + span.GetProperty("offset").GetInt32();
            for (int i = 0; i < span.GetProperty("length").GetInt32(); i++, index++)
            {
                count += long.Parse(deltas[d++].GetString()!, System.Globalization.CultureInfo.InvariantCulture);
                total += count;
                highest = count != 0 ? index : highest;
            }
        }

        // Prometheus's bucket i holds (2^((i-1)/2^schema), 2^(i/2^schema)]: the highest non-empty one holds the big value.
        double lower = Math.Pow(2, Math.ScaleB(highest - 1, -schema)), upper = Math.Pow(2, Math.ScaleB(highest, -schema));
        Assert.True(lower < big && big <= upper, $"schema {schema}, bucket {highest}: ({lower}, {upper}] does not hold {big}");
        Assert.Equal(2, total);
        Assert.InRange(deltas.Length, 2, 4100);
    }

    private static System.Text.Json.JsonElement DecodeProtobuf(byte[] body) =>
        OtlpReceiver.RunDecoder("prom-decode.js", "protobufjs", body, "protobufjs with Prometheus's metrics.proto field numbers");

    [Fact]
    public async Task HostileAcceptHeaders_FallBackToText()
    {
        await using TestApp app = await TestApp.StartAsync();
        foreach (string accept in new[] { string.Concat(Enumerable.Repeat("application/openmetrics-text,", 200)), "application/openmetrics-text;q=0.1,text/plain;q=0.9", "garbage/;;;q==,,,=;version=" })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/metrics");
            request.Headers.TryAddWithoutValidation("Accept", accept);
            using HttpResponseMessage response = await app.Client.SendAsync(request, Ct);
            Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
            Assert.StartsWith("text/plain", response.Content.Headers.ContentType!.ToString(), StringComparison.Ordinal);
            Scrape.Parse(await response.Content.ReadAsStringAsync(Ct));
        }
    }

    [Theory]
    [InlineData("gzip", true)]
    [InlineData("gzip, deflate, br", true)]
    [InlineData("br;q=1.0, gzip;q=0.8, *;q=0.1", true)]
    [InlineData("*", true)]
    [InlineData("gzip;q=0", false)]
    [InlineData("identity", false)]
    [InlineData("deflate", false)]
    [InlineData("gzip;q=abc", false)]
    [InlineData("", false)]
    [InlineData("*, gzip;q=0", false)] // gzip's own q=0 refuses it, whatever the wildcard says
    [InlineData("gzip;q=0, *", false)]
    [InlineData("*;q=0", false)]
    [InlineData("deflate, *;q=0.5", true)]
    [InlineData("*;q=0, gzip", true)]
    public void AcceptEncoding_Gzip(string header, bool gzip) =>
        Assert.Equal(gzip, PerCpu.AspNetCore.Internal.ScrapeEndpoint.AcceptsGzip(header));

    [Fact]
    public async Task GzipAsked_ScrapeIsCompressed_AndHoldsTheSameSamples()
    {
        await using TestApp app = await TestApp.StartAsync();
        for (int i = 0; i < 20; i++)
        {
            (await app.Client.GetAsync("/items/" + i, Ct)).Dispose();
        }

        using var request = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        request.Headers.AcceptEncoding.ParseAdd("gzip");
        using HttpResponseMessage response = await app.Client.SendAsync(request, Ct);
        Assert.Equal("gzip", Assert.Single(response.Content.Headers.ContentEncoding));
        Assert.Contains("Accept-Encoding", response.Headers.Vary);
        byte[] compressed = await response.Content.ReadAsByteArrayAsync(Ct);
        using var gunzip = new System.IO.Compression.GZipStream(new MemoryStream(compressed), System.IO.Compression.CompressionMode.Decompress);
        string text = await new StreamReader(gunzip).ReadToEndAsync(Ct);
        Scrape zipped = Scrape.Parse(text);
        Scrape plain = await app.ScrapeAsync();
        Assert.True(compressed.Length < plain.Text.Length / 3, $"{compressed.Length} bytes compressed, {plain.Text.Length} plain");
        Assert.Equal(plain.CountsByRouteMethodStatus(), zipped.CountsByRouteMethodStatus());
        Assert.Equal(20, zipped.CountsByRouteMethodStatus()["/items/{id:int} GET 200"]);
    }

    [Fact]
    public async Task AnotherEndpointAtTheScrapePath_WarnsAtStartup()
    {
        WebApplicationBuilder b = WebApplication.CreateSlimBuilder();
        b.WebHost.UseUrls("http://127.0.0.1:0");
        b.Logging.ClearProviders();
        b.Logging.AddFakeLogging();
        b.Services.AddPerCpuMetrics();
        await using WebApplication app = b.Build();
        app.UsePerCpuMetrics();
        app.MapPerCpuMetrics();
        app.MapGet("/metrics/", () => "another exporter").WithDisplayName("other exporter");
        app.MapGet("/metrics/app", () => "fine");
        await app.StartAsync(Ct);
        IReadOnlyList<FakeLogRecord> warnings = [.. app.Services.GetFakeLogCollector().GetSnapshot().Where(r => r.Level == LogLevel.Warning && r.Id.Id == 10)];
        FakeLogRecord warning = Assert.Single(warnings);
        Assert.Contains("other exporter", warning.Message, StringComparison.Ordinal);
        Assert.Contains("'/metrics'", warning.Message, StringComparison.Ordinal);
        await app.StopAsync(Ct);
    }
}
