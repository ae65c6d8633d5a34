using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using PerCpu.AspNetCore.Internal;
using PerCpu.AspNetCore.Otlp;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// PerCpu's own OTLP/HTTP exporter, checked against a loopback receiver and OpenTelemetry JS's generated decoder: what
/// arrives must equal PerCpu's snapshots (counts, sums, bucket counts, scale and offset).
/// </summary>
public sealed class OtlpExporterTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public async Task Cumulative_DecodedRequest_EqualsPerCpuSnapshots(bool exponential, bool gzip)
    {
        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync();
        await using TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = receiver.Endpoint;
            o.ExportInterval = TimeSpan.FromHours(1); // exports are triggered by the test
            o.ExponentialHistogram = exponential;
            o.Gzip = gzip;
            o.ServiceName = "otlp-test";
            o.Headers["Authorization"] = "Bearer secret";
        }));
        await Requests(app, 30);
        OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();

        Assert.True(await exporter.ExportAsync(Ct));

        (DateTimeOffset _, byte[] body, string? encoding, string? contentType, string? authorization) = Assert.Single(receiver.Requests);
        Assert.Equal("application/x-protobuf", contentType);
        Assert.Equal(gzip ? "gzip" : null, encoding);
        Assert.Equal("Bearer secret", authorization);
        Assert.Matches(@"^PerCpu-OTLP-Exporter-Dotnet/\d+\.\d+\.\d+", Assert.Single(receiver.UserAgents)); // as the SDK's exporters name themselves
        JsonElement request = OtlpReceiver.Decode(body);
        JsonElement resourceMetrics = request.GetProperty("resourceMetrics")[0];
        Assert.Equal("otlp-test", Attribute(resourceMetrics.GetProperty("resource").GetProperty("attributes"), "service.name"));
        JsonElement scope = resourceMetrics.GetProperty("scopeMetrics")[0];
        Assert.Equal("PerCpu.AspNetCore", scope.GetProperty("scope").GetProperty("name").GetString());

        JsonElement duration = Metric(scope, "http.server.request.duration");
        Assert.Equal("s", duration.GetProperty("unit").GetString());
        HttpMetricsStore store = app.App.Services.GetRequiredService<HttpMetricsStore>();
        var expected = store.Endpoints().Where(e => !e.Excluded).SelectMany(e => e.Series()).ToDictionary(Key, s => s.Duration.Snapshot());
        JsonElement data = duration.GetProperty(exponential ? "exponentialHistogram" : "histogram");
        Assert.Equal("AGGREGATION_TEMPORALITY_CUMULATIVE", data.GetProperty("aggregationTemporality").GetString());
        JsonElement[] points = [.. data.GetProperty("dataPoints").EnumerateArray()];
        Assert.Equal(expected.Count, points.Length);
        foreach (JsonElement point in points)
        {
            HistogramSnapshot snap = expected[Key(point.GetProperty("attributes"))];
            Assert.Equal(snap.Count, long.Parse(point.GetProperty("count").GetString()!, CultureInfo.InvariantCulture));
            Assert.Equal(snap.Sum, point.GetProperty("sum").GetDouble());
            Assert.Equal(snap.Min, point.GetProperty("min").GetDouble());
            Assert.Equal(snap.Max, point.GetProperty("max").GetDouble());
            if (exponential)
            {
                Assert.Equal(snap.Scale, point.GetProperty("scale").GetInt32());
                Assert.Equal(snap.ZeroCount + snap.Underflow, long.Parse(point.GetProperty("zeroCount").GetString()!, CultureInfo.InvariantCulture));
                Assert.Equal(Math.ScaleB(1, snap.MinExponent), point.GetProperty("zeroThreshold").GetDouble());
                JsonElement positive = point.GetProperty("positive");
                int offset = positive.GetProperty("offset").GetInt32();
                long[] counts = [.. positive.GetProperty("bucketCounts").EnumerateArray().Select(c => long.Parse(c.GetString()!, CultureInfo.InvariantCulture))];
                long[] dense = [.. snap.ExponentialCounts, snap.Overflow];
                int first = Array.FindIndex(dense, c => c != 0);
                Assert.Equal(snap.Offset + first, offset);
                Assert.Equal(dense.Skip(first).Take(counts.Length), counts);
                Assert.Equal(snap.Count - snap.ZeroCount - snap.Underflow, counts.Sum());
            }
            else
            {
                double[] bounds = [.. point.GetProperty("explicitBounds").EnumerateArray().Select(b => b.GetDouble())];
                Assert.Equal(snap.ExplicitBoundaries, bounds);
                long[] counts = [.. point.GetProperty("bucketCounts").EnumerateArray().Select(c => long.Parse(c.GetString()!, CultureInfo.InvariantCulture))];
                long running = 0;
                for (int i = 0; i < bounds.Length; i++)
                {
                    running += counts[i];
                    Assert.Equal(snap.CumulativeCounts[i], running);
                }

                Assert.Equal(snap.Count, running + counts[^1]);
            }
        }

        JsonElement active = Metric(scope, "http.server.active_requests").GetProperty("sum");
        Assert.False(active.GetProperty("isMonotonic").GetBoolean());
        Assert.Equal("AGGREGATION_TEMPORALITY_CUMULATIVE", active.GetProperty("aggregationTemporality").GetString());
        Assert.Contains(Metric(scope, "percpu.http.server.request_rate").GetProperty("gauge").GetProperty("dataPoints").EnumerateArray(), p => Attribute(p.GetProperty("attributes"), "window") == "10s");
    }

    /// <summary>
    /// Delta temporality for the app's families: counters and histograms as changes since their last delivered point
    /// (an undelivered change merged into the next export, a series without change sending nothing), up-down counters and
    /// gauges as totals, as the OpenTelemetry SDK does with the delta preference.
    /// </summary>
    [Fact]
    public async Task AppFamilies_DeltaTemporality_CountersAndHistogramsAsChanges_NothingLostOnAFailedExport()
    {
        string meterName = "OtlpDelta" + Guid.NewGuid().ToString("N")[..8];
        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync();
        receiver.Respond = n => n == 3 ? (400, [], []) : (200, [], []); // the third export is refused (not retryable)
        await using TestApp app = await TestApp.StartAsync(o => o.Meters.Add(meterName), b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = receiver.Endpoint;
            o.ExportInterval = TimeSpan.FromHours(1);
            o.Temporality = OtlpTemporality.Delta;
        }));
        Meter meter = app.App.Services.GetRequiredService<IMeterFactory>().Create(meterName);
        var orders = meter.CreateCounter<long>("shop.orders", "{order}");
        var revenue = meter.CreateCounter<double>("shop.revenue", "{EUR}");
        var checkout = meter.CreateHistogram<double>("shop.checkout.duration", "s");
        var carts = meter.CreateUpDownCounter<long>("shop.carts", "{cart}");
        OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();
        KeyValuePair<string, object?> eu = new("region", "eu"), us = new("region", "us");

        orders.Add(5, eu);
        revenue.Add(2.5);
        checkout.Record(0.25);
        checkout.Record(0.5);
        carts.Add(4);
        Assert.True(await exporter.ExportAsync(Ct)); // 1
        orders.Add(3, eu);
        orders.Add(2, us);
        carts.Add(-1);
        Assert.True(await exporter.ExportAsync(Ct)); // 2: no revenue, no checkout since 1
        orders.Add(4, us);
        checkout.Record(1.0);
        Assert.False(await exporter.ExportAsync(Ct)); // 3: refused
        orders.Add(1, us);
        Assert.True(await exporter.ExportAsync(Ct)); // 4: carries what 3 could not

        JsonElement[] scopes = [.. receiver.Requests.Select(r => OtlpReceiver.Decode(r.Body).GetProperty("resourceMetrics")[0].GetProperty("scopeMetrics")[0])];
        Assert.Equal(4, scopes.Length);
        static JsonElement? Find(JsonElement scope, string name) =>
            scope.GetProperty("metrics").EnumerateArray().Where(m => m.GetProperty("name").GetString() == name).Cast<JsonElement?>().FirstOrDefault();
        long Orders(int export, string region)
        {
            JsonElement sum = Find(scopes[export], "shop.orders")!.Value.GetProperty("sum");
            Assert.Equal("AGGREGATION_TEMPORALITY_DELTA", sum.GetProperty("aggregationTemporality").GetString());
            JsonElement? point = sum.GetProperty("dataPoints").EnumerateArray().Where(p => Attribute(p.GetProperty("attributes"), "region") == region).Cast<JsonElement?>().FirstOrDefault();
            return point is null ? 0 : long.Parse(point.Value.GetProperty("asInt").GetString()!, CultureInfo.InvariantCulture);
        }

        Assert.Equal((5, 0), (Orders(0, "eu"), Orders(0, "us")));
        Assert.Equal((3, 2), (Orders(1, "eu"), Orders(1, "us")));
        Assert.Equal((0, 4), (Orders(2, "eu"), Orders(2, "us"))); // eu unchanged: no point
        Assert.Equal((0, 5), (Orders(3, "eu"), Orders(3, "us"))); // the refused 4 and the new 1
        Assert.Equal(2.5, Assert.Single(Find(scopes[0], "shop.revenue")!.Value.GetProperty("sum").GetProperty("dataPoints").EnumerateArray()).GetProperty("asDouble").GetDouble());
        Assert.Null(Find(scopes[1], "shop.revenue")); // nothing added since: no metric

        // Each delta starts where the series' previous delivered point ended.
        ulong Time(JsonElement point, string field) => ulong.Parse(point.GetProperty(field).GetString()!, CultureInfo.InvariantCulture);
        JsonElement euInSecond = Find(scopes[1], "shop.orders")!.Value.GetProperty("sum").GetProperty("dataPoints").EnumerateArray().Single(p => Attribute(p.GetProperty("attributes"), "region") == "eu");
        JsonElement euInFirst = Find(scopes[0], "shop.orders")!.Value.GetProperty("sum").GetProperty("dataPoints")[0];
        Assert.Equal(Time(euInFirst, "timeUnixNano"), Time(euInSecond, "startTimeUnixNano"));

        JsonElement Histogram(int export) => Assert.Single(Find(scopes[export], "shop.checkout.duration")!.Value.GetProperty("histogram").GetProperty("dataPoints").EnumerateArray());
        Assert.Equal("AGGREGATION_TEMPORALITY_DELTA", Find(scopes[0], "shop.checkout.duration")!.Value.GetProperty("histogram").GetProperty("aggregationTemporality").GetString());
        Assert.Equal(2, long.Parse(Histogram(0).GetProperty("count").GetString()!, CultureInfo.InvariantCulture));
        Assert.Equal((0.25, 0.5), (Histogram(0).GetProperty("min").GetDouble(), Histogram(0).GetProperty("max").GetDouble()));
        Assert.Null(Find(scopes[1], "shop.checkout.duration"));
        Assert.Equal(1, long.Parse(Histogram(3).GetProperty("count").GetString()!, CultureInfo.InvariantCulture)); // the refused record, merged
        Assert.Equal(1.0, Histogram(3).GetProperty("sum").GetDouble());

        JsonElement cartsSum = Find(scopes[1], "shop.carts")!.Value.GetProperty("sum");
        Assert.Equal("AGGREGATION_TEMPORALITY_CUMULATIVE", cartsSum.GetProperty("aggregationTemporality").GetString());
        Assert.Equal(3, long.Parse(Assert.Single(cartsSum.GetProperty("dataPoints").EnumerateArray()).GetProperty("asInt").GetString()!, CultureInfo.InvariantCulture));
    }

    /// <summary>An instrument nothing has recorded into sends no metric (as the OpenTelemetry SDK), until it has a point.</summary>
    [Fact]
    public async Task InstrumentWithoutPoints_SendsNoMetric_UntilItHasOne()
    {
        string meterName = "OtlpQuiet" + Guid.NewGuid().ToString("N")[..8];
        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync();
        await using TestApp app = await TestApp.StartAsync(o => o.Meters.Add(meterName), b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = receiver.Endpoint;
            o.ExportInterval = TimeSpan.FromHours(1);
        }));
        Meter meter = app.App.Services.GetRequiredService<IMeterFactory>().Create(meterName);
        var refunds = meter.CreateCounter<long>("shop.refunds", "{refund}");
        var wait = meter.CreateHistogram<double>("shop.refund.wait", "s");
        OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();

        Assert.True(await exporter.ExportAsync(Ct));
        refunds.Add(2);
        Assert.True(await exporter.ExportAsync(Ct));

        string[][] names = [.. receiver.Requests.Select(r => OtlpReceiver.Decode(r.Body).GetProperty("resourceMetrics")[0].GetProperty("scopeMetrics")[0]
            .GetProperty("metrics").EnumerateArray().Select(m => m.GetProperty("name").GetString()!).ToArray())];
        Assert.Equal(2, names.Length);
        Assert.DoesNotContain("shop.refunds", names[0]);
        Assert.DoesNotContain("shop.refund.wait", names[0]);
        Assert.Contains("shop.refunds", names[1]);
        Assert.DoesNotContain("shop.refund.wait", names[1]);
        GC.KeepAlive(wait);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AppFamilies_MeterApiAndRegistry_ExportedAsRealOtlpPoints(bool exponential)
    {
        string meterName = "OtlpShop" + Guid.NewGuid().ToString("N")[..8];
        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync();
        await using TestApp app = await TestApp.StartAsync(o => o.Meters.Add(meterName), b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = receiver.Endpoint;
            o.ExportInterval = TimeSpan.FromHours(1);
            o.ExponentialHistogram = exponential;
        }));
        Meter meter = app.App.Services.GetRequiredService<IMeterFactory>().Create(meterName);
        var orders = meter.CreateCounter<long>("shop.orders", "{order}", "Orders placed.");
        var checkout = meter.CreateHistogram<double>("shop.checkout.duration", "s");
        meter.CreateObservableGauge("shop.stock", () => 7.5);
        for (int i = 0; i < 40; i++)
        {
            orders.Add(1, new KeyValuePair<string, object?>("region", i % 2 == 0 ? "eu" : "us"));
            checkout.Record(0.02 * (1 + (i % 4)), new KeyValuePair<string, object?>("region", "eu"));
        }

        PerCpu.Families.UpDownCounterFamily open = app.App.Services.GetRequiredService<PerCpu.Families.MetricRegistry>().CreateUpDownCounter("worker.open", "{job}", null, "queue");
        open.WithLabels("mail").Add(-3);
        OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();
        Assert.True(await exporter.ExportAsync(Ct));
        Assert.True(await exporter.ExportAsync(Ct));

        // Both exports carry the totals (cumulative): a lost export would lose nothing.
        foreach ((DateTimeOffset _, byte[] body, string? _, string? _, string? _) in receiver.Requests)
        {
            JsonElement scope = OtlpReceiver.Decode(body).GetProperty("resourceMetrics")[0].GetProperty("scopeMetrics")[0];
            JsonElement sum = Metric(scope, "shop.orders").GetProperty("sum");
            Assert.True(sum.GetProperty("isMonotonic").GetBoolean());
            Assert.Equal("AGGREGATION_TEMPORALITY_CUMULATIVE", sum.GetProperty("aggregationTemporality").GetString());
            Assert.Equal("{order}", Metric(scope, "shop.orders").GetProperty("unit").GetString());
            Assert.Equal(20, long.Parse(sum.GetProperty("dataPoints").EnumerateArray().Single(p => Attribute(p.GetProperty("attributes"), "region") == "eu").GetProperty("asInt").GetString()!, CultureInfo.InvariantCulture));
            Assert.Equal(20, long.Parse(sum.GetProperty("dataPoints").EnumerateArray().Single(p => Attribute(p.GetProperty("attributes"), "region") == "us").GetProperty("asInt").GetString()!, CultureInfo.InvariantCulture));
            JsonElement hist = Metric(scope, "shop.checkout.duration").GetProperty(exponential ? "exponentialHistogram" : "histogram");
            JsonElement point = Assert.Single(hist.GetProperty("dataPoints").EnumerateArray());
            Assert.Equal(40, long.Parse(point.GetProperty("count").GetString()!, CultureInfo.InvariantCulture));
            Assert.Equal(0.02 * 100, point.GetProperty("sum").GetDouble(), 9);
            Assert.Equal(0.02, point.GetProperty("min").GetDouble());
            Assert.Equal(0.08, point.GetProperty("max").GetDouble());
            Assert.Equal(7.5, Assert.Single(Metric(scope, "shop.stock").GetProperty("gauge").GetProperty("dataPoints").EnumerateArray()).GetProperty("asDouble").GetDouble());
            JsonElement openSum = Metric(scope, "worker.open").GetProperty("sum");
            Assert.False(openSum.GetProperty("isMonotonic").GetBoolean());
            Assert.Equal(-3, long.Parse(Assert.Single(openSum.GetProperty("dataPoints").EnumerateArray()).GetProperty("asInt").GetString()!, CultureInfo.InvariantCulture));
        }

        Assert.Equal(2, receiver.Requests.Count);
    }

    [Fact]
    public async Task Delta_ExportsAddUpToEveryRequest()
    {
        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync();
        await using TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = receiver.Endpoint;
            o.ExportInterval = TimeSpan.FromHours(1);
            o.Temporality = OtlpTemporality.Delta;
            o.ExponentialHistogram = true;
        }));
        OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();

        await Requests(app, 20);
        Assert.True(await exporter.ExportAsync(Ct));
        await Requests(app, 7);
        Assert.True(await exporter.ExportAsync(Ct));
        Assert.True(await exporter.ExportAsync(Ct)); // nothing new

        long[] perExport = [.. receiver.Requests.Select(r => DurationCount(OtlpReceiver.Decode(r.Body), "AGGREGATION_TEMPORALITY_DELTA"))];
        Assert.Equal([20, 7, 0], perExport);
    }

    [Fact]
    public async Task ReceiverDownThenBack_AppUnaffected_DeltasMergedAndDelivered()
    {
        int port = SampleProcess.FreePort();
        await using TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = new Uri($"http://127.0.0.1:{port}/v1/metrics");
            o.ExportInterval = TimeSpan.FromHours(1);
            o.ExportTimeout = TimeSpan.FromSeconds(1);
            o.RetryInitialBackoff = TimeSpan.FromMilliseconds(100);
            o.Temporality = OtlpTemporality.Delta;
        }));
        OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();

        await Requests(app, 10);
        Assert.False(await exporter.ExportAsync(Ct)); // nobody listens: retried until the timeout, then kept
        await Requests(app, 5);                        // the app keeps serving meanwhile
        Assert.False(await exporter.ExportAsync(Ct));

        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync(port);
        await Requests(app, 3);
        Assert.True(await exporter.ExportAsync(Ct));

        Assert.Equal(18, DurationCount(OtlpReceiver.Decode(Assert.Single(receiver.Requests).Body), "AGGREGATION_TEMPORALITY_DELTA"));
    }

    [Fact]
    public async Task Receiver503WithRetryAfter_RetriedAfterTheDelay()
    {
        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync();
        receiver.Respond = n => n == 1 ? (503, new Dictionary<string, string> { ["Retry-After"] = "1" }, []) : (200, [], []);
        await using TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = receiver.Endpoint;
            o.ExportInterval = TimeSpan.FromHours(1);
            o.ExportTimeout = TimeSpan.FromSeconds(10);
            o.RetryInitialBackoff = TimeSpan.FromMilliseconds(10); // Retry-After must win over this
        }));
        await Requests(app, 4);

        Assert.True(await app.App.Services.GetRequiredService<OtlpExporterService>().ExportAsync(Ct));

        var requests = receiver.Requests.ToArray();
        Assert.Equal(2, requests.Length);
        Assert.True(requests[1].At - requests[0].At >= TimeSpan.FromMilliseconds(900), $"retried after {(requests[1].At - requests[0].At).TotalMilliseconds} ms");
        Assert.Equal(4, DurationCount(OtlpReceiver.Decode(requests[1].Body), "AGGREGATION_TEMPORALITY_CUMULATIVE"));
    }

    [Fact]
    public async Task MalformedResponses_NeitherCrashNorLoseData()
    {
        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync();
        byte[] garbage = [0xFF, 0xFF, 0xFF, 0x01, 0x02];
        receiver.Respond = n => n switch
        {
            1 => (200, [], garbage),                 // accepted, with a body that is not an ExportMetricsServiceResponse
            2 => (400, [], garbage),                 // rejected, not retryable
            _ => (200, [], []),
        };
        await using TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = receiver.Endpoint;
            o.ExportInterval = TimeSpan.FromHours(1);
            o.Temporality = OtlpTemporality.Delta;
        }));
        OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();

        await Requests(app, 6);
        Assert.True(await exporter.ExportAsync(Ct));
        await Requests(app, 4);
        Assert.False(await exporter.ExportAsync(Ct));
        await Requests(app, 2);
        using (HttpResponseMessage r = await app.Client.GetAsync("/items/1", Ct))
        {
            Assert.Equal(System.Net.HttpStatusCode.OK, r.StatusCode);
        }

        Assert.True(await exporter.ExportAsync(Ct));

        long[] counts = [.. receiver.Requests.Select(r => DurationCount(OtlpReceiver.Decode(r.Body), "AGGREGATION_TEMPORALITY_DELTA"))];
        Assert.Equal([6, 4, 7], counts); // the rejected delta was merged into the next export
    }

    [Fact]
    public async Task HostedService_ExportsPeriodically_AndFlushesOnShutdown()
    {
        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync();
        TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = receiver.Endpoint;
            o.ExportInterval = TimeSpan.FromMilliseconds(200);
        }));
        try
        {
            await Requests(app, 5);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (!receiver.Requests.Any(r => DurationCount(OtlpReceiver.Decode(r.Body), null) == 5) && clock.Elapsed < TimeSpan.FromSeconds(10))
            {
                await Task.Delay(100, Ct);
            }

            Assert.Contains(receiver.Requests, r => DurationCount(OtlpReceiver.Decode(r.Body), null) == 5);
            await Requests(app, 2);
        }
        finally
        {
            await app.DisposeAsync(); // graceful stop: one final export
        }

        Assert.Equal(7, DurationCount(OtlpReceiver.Decode(receiver.Requests.Last().Body), null));
    }

    [Fact]
    public async Task Sample_NativeExporterByDefault_RealHistograms_EachMetricOnce_AppAndRuntimeMetricsIncluded()
    {
        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync();
        await using SampleProcess sample = await SampleProcess.StartAsync(new Dictionary<string, string>
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.Endpoint.GetLeftPart(UriPartial.Authority),
            ["OTEL_METRIC_EXPORT_INTERVAL"] = "300",
            ["OTEL_SERVICE_NAME"] = "sample-native",
        });
        using var client = new HttpClient { BaseAddress = sample.BaseAddress };
        for (int i = 0; i < 9; i++)
        {
            using HttpResponseMessage r = await client.GetAsync("/items/" + i, Ct);
        }

        for (int i = 0; i < 4; i++)
        {
            using HttpResponseMessage r = await client.PostAsync("/checkout", new StringContent("{\"region\":\"eu\",\"items\":2}", System.Text.Encoding.UTF8, "application/json"), Ct);
            Assert.Equal(System.Net.HttpStatusCode.Created, r.StatusCode);
        }

        var clock = System.Diagnostics.Stopwatch.StartNew();
        JsonElement? found = null;
        while (found is null && clock.Elapsed < TimeSpan.FromSeconds(15))
        {
            found = receiver.Requests.Select(r => OtlpReceiver.Decode(r.Body)).Cast<JsonElement?>().FirstOrDefault(d => DurationCount(d!.Value, null) == 9 + 4 && OrdersIn(d.Value) == 4);
            await Task.Delay(200, Ct);
        }

        Assert.True(found.HasValue, "the sample's native exporter did not deliver the 13 requests and 4 orders:\n" + sample.Output);
        JsonElement resource = found.Value.GetProperty("resourceMetrics")[0].GetProperty("resource");
        Assert.Equal("sample-native", Attribute(resource.GetProperty("attributes"), "service.name"));
        string[] names = [.. found.Value.GetProperty("resourceMetrics").EnumerateArray().SelectMany(rm => rm.GetProperty("scopeMetrics").EnumerateArray())
            .SelectMany(sm => sm.GetProperty("metrics").EnumerateArray()).Select(m => m.GetProperty("name").GetString()!)];
        Assert.Equal(names.Length, names.Distinct().Count()); // each metric once
        Assert.Contains("shop.checkout.duration", names);
        Assert.Contains("dotnet.gc.heap.total_allocated", names);
        Assert.DoesNotContain("http.server.request.duration.bucket", names); // a real histogram, not the meter bridge's counters
        // Nothing reached the collector through a second path: every request came from PerCpu's exporter.
        Assert.All(receiver.Requests, r => Assert.DoesNotContain("http.server.request.duration.bucket", OtlpReceiver.Decode(r.Body).ToString(), StringComparison.Ordinal));

        static long OrdersIn(JsonElement request) =>
            request.GetProperty("resourceMetrics").EnumerateArray().SelectMany(rm => rm.GetProperty("scopeMetrics").EnumerateArray())
                .SelectMany(sm => sm.GetProperty("metrics").EnumerateArray()).Where(m => m.GetProperty("name").GetString() == "shop.orders")
                .SelectMany(m => m.GetProperty("sum").GetProperty("dataPoints").EnumerateArray())
                .Sum(p => long.Parse(p.GetProperty("asInt").GetString()!, CultureInfo.InvariantCulture));
    }

    [Fact]
    public void Options_FromStandardVariables()
    {
        IConfiguration config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4318/",
            ["OTEL_EXPORTER_OTLP_HEADERS"] = "api-key=a%20b,x-tenant=7",
            ["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"] = "LowMemory",
            ["OTEL_METRIC_EXPORT_INTERVAL"] = "15000",
            ["OTEL_METRIC_EXPORT_TIMEOUT"] = "5000",
            ["OTEL_EXPORTER_OTLP_COMPRESSION"] = "gzip",
            ["OTEL_RESOURCE_ATTRIBUTES"] = "deployment.environment=prod,service.name=from-resource",
        }).Build();
        var options = new PerCpuOtlpExporterOptions();

        new OtlpOptionsSetup(config).Configure(options);

        Assert.Equal(new Uri("http://collector:4318/v1/metrics"), options.Endpoint);
        Assert.Equal("a b", options.Headers["api-key"]);
        Assert.Equal("7", options.Headers["x-tenant"]);
        Assert.Equal(OtlpTemporality.Delta, options.Temporality);
        Assert.Equal(TimeSpan.FromSeconds(15), options.ExportInterval);
        Assert.Equal(TimeSpan.FromSeconds(5), options.ExportTimeout);
        Assert.True(options.Gzip);
        Assert.Equal("prod", options.ResourceAttributes["deployment.environment"]);
        Assert.Equal("from-resource", options.ServiceName);

        IConfiguration specific = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4318",
            ["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = "https://metrics.example:443/custom",
            ["OTEL_SERVICE_NAME"] = "svc",
        }).Build();
        var o2 = new PerCpuOtlpExporterOptions();
        new OtlpOptionsSetup(specific).Configure(o2);
        Assert.Equal(new Uri("https://metrics.example:443/custom"), o2.Endpoint);
        Assert.Equal("svc", o2.ServiceName);
        Assert.Equal(OtlpTemporality.Cumulative, o2.Temporality);
    }

    [Fact]
    public async Task Options_Invalid_FailStartupNamingTheOption()
    {
        OptionsValidationException ex = await Assert.ThrowsAsync<OptionsValidationException>(async () =>
        {
            await using TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddPerCpuOtlpExporter(o =>
            {
                o.Endpoint = new Uri("ftp://collector/v1/metrics");
                o.ExportInterval = TimeSpan.Zero;
            }));
        });

        Assert.Contains("PerCpuOtlpExporterOptions.Endpoint", ex.Message, StringComparison.Ordinal);
        Assert.Contains("PerCpuOtlpExporterOptions.ExportInterval", ex.Message, StringComparison.Ordinal);
    }

    private static async Task Requests(TestApp app, int n)
    {
        for (int i = 0; i < n; i++)
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/items/" + i, Ct);
        }
    }

    /// <summary>The total count of http.server.request.duration in a decoded request, checking its temporality.</summary>
    internal static long DurationCount(JsonElement request, string? temporality)
    {
        JsonElement scope = request.GetProperty("resourceMetrics")[0].GetProperty("scopeMetrics")[0];
        JsonElement duration = Metric(scope, "http.server.request.duration");
        JsonElement data = duration.TryGetProperty("exponentialHistogram", out JsonElement e) && e.ValueKind == JsonValueKind.Object ? e : duration.GetProperty("histogram");
        if (temporality is not null)
        {
            Assert.Equal(temporality, data.GetProperty("aggregationTemporality").GetString());
        }

        return data.GetProperty("dataPoints").EnumerateArray().Sum(p => long.Parse(p.GetProperty("count").GetString()!, CultureInfo.InvariantCulture));
    }

    internal static JsonElement Metric(JsonElement scope, string name) =>
        scope.GetProperty("metrics").EnumerateArray().Single(m => m.GetProperty("name").GetString() == name);

    private static string? Attribute(JsonElement attributes, string key)
    {
        foreach (JsonElement kv in attributes.EnumerateArray())
        {
            if (kv.GetProperty("key").GetString() == key)
            {
                JsonElement v = kv.GetProperty("value");
                return v.TryGetProperty("stringValue", out JsonElement s) && s.ValueKind == JsonValueKind.String ? s.GetString() : v.ToString();
            }
        }

        return null;
    }

    private static string Key(RequestSeries s) => $"{s.Route} {s.Method} {s.Status}";

    private static string Key(JsonElement attributes)
    {
        string? status = null;
        foreach (JsonElement kv in attributes.EnumerateArray())
        {
            if (kv.GetProperty("key").GetString() == "http.response.status_code")
            {
                status = kv.GetProperty("value").GetProperty("intValue").GetString();
            }
        }

        return $"{Attribute(attributes, "http.route")} {Attribute(attributes, "http.request.method")} {status}";
    }
}
