using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using PerCpu.AspNetCore.Internal;
using PerCpu.AspNetCore.Otlp;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// Requests under a sampled W3C <c>traceparent</c> leave exemplars in their duration buckets, seen in the OpenMetrics
/// scrape, the protobuf scrape (decoded by protobufjs) and OTLP (decoded by OpenTelemetry JS); unsampled ones do not.
/// </summary>
[Collection(nameof(ActivityListenerCollection))]
public sealed partial class ExemplarTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task SampledTraceparent_LeavesExemplars_InOpenMetricsProtobufAndOtlp()
    {
        using ActivityListener listener = ParentBasedListener();
        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync();
        await using TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = receiver.Endpoint;
            o.ExportInterval = TimeSpan.FromHours(1);
        }));

        (HashSet<string> sampled, HashSet<string> unsampled) = await SendTraced(app, 40);

        // OpenMetrics: every exemplar belongs to a sampled request and lies in its bucket; the 0.0.4 text has none.
        Scrape om = await app.ScrapeAsync(openMetrics: true);
        var exemplars = om.Named("http_server_request_duration_seconds_bucket").Where(s => s.Exemplar is not null).ToList();
        Assert.NotEmpty(exemplars);
        var previousLe = new Dictionary<string, double>();
        foreach (Scrape.Sample bucket in om.Named("http_server_request_duration_seconds_bucket"))
        {
            string series = string.Join(",", bucket.Labels.Where(l => l.Key != "le").Select(l => l.Key + "=" + l.Value));
            double le = bucket.Labels["le"] == "+Inf" ? double.PositiveInfinity : double.Parse(bucket.Labels["le"], CultureInfo.InvariantCulture);
            double below = previousLe.GetValueOrDefault(series, double.NegativeInfinity);
            previousLe[series] = le;
            if (bucket.Exemplar is null)
            {
                continue;
            }

            Match m = OpenMetricsExemplar().Match(bucket.Exemplar);
            Assert.True(m.Success, "not an OpenMetrics exemplar: " + bucket.Exemplar);
            Assert.Contains(m.Groups["trace"].Value, sampled);
            Assert.DoesNotContain(m.Groups["trace"].Value, unsampled);
            double value = double.Parse(m.Groups["value"].Value, CultureInfo.InvariantCulture);
            Assert.InRange(value, below, le);
            Assert.True(value > below, $"exemplar {value} belongs to a lower bucket than le={le}");
            double at = double.Parse(m.Groups["ts"].Value, CultureInfo.InvariantCulture);
            Assert.InRange(at, DateTimeOffset.UtcNow.AddMinutes(-2).ToUnixTimeMilliseconds() / 1000.0, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0 + 1);

            // OpenMetrics: the label names and values of an exemplar's label set total at most 128 characters.
            int labelCharacters = Regex.Matches(m.Groups["labels"].Value, "([a-z_]+)=\"([^\"]*)\"").Sum(l => l.Groups[1].Length + l.Groups[2].Length);
            Assert.InRange(labelCharacters, 1, 128);
        }

        Assert.DoesNotContain("trace_id", (await app.ScrapeAsync()).Text, StringComparison.Ordinal);

        // The snapshot's exemplars are the ones exposed.
        HttpMetricsStore store = app.App.Services.GetRequiredService<HttpMetricsStore>();
        HistogramExemplar[] all = [.. store.RecordedSeries().SelectMany(s => s.Duration.Snapshot().Exemplars)];
        Assert.Equal(exemplars.Count, all.Length);
        Assert.All(all, e => Assert.Contains(e.TraceId.ToHexString(), sampled));

        // Protobuf: Bucket.exemplar, decoded by protobufjs with metrics.proto's field numbers.
        using var request = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        request.Headers.TryAddWithoutValidation("Accept", PrometheusProtobufWriter.ContentType);
        using HttpResponseMessage response = await app.Client.SendAsync(request, Ct);
        JsonElement families = OtlpReceiver.RunDecoder("prom-decode.js", "protobufjs", await response.Content.ReadAsByteArrayAsync(Ct), "protobufjs with Prometheus's metrics.proto field numbers");
        JsonElement duration = families.EnumerateArray().Single(f => f.GetProperty("name").GetString() == "http_server_request_duration_seconds");
        int protobufExemplars = 0;
        foreach (JsonElement metric in duration.GetProperty("metric").EnumerateArray())
        {
            double below = double.NegativeInfinity;
            foreach (JsonElement bucket in metric.GetProperty("histogram").GetProperty("bucket").EnumerateArray())
            {
                double upper = bucket.GetProperty("upperBound").ValueKind != JsonValueKind.Number ? double.PositiveInfinity /* JSON has no Infinity */ : bucket.GetProperty("upperBound").GetDouble();
                if (bucket.TryGetProperty("exemplar", out JsonElement ex) && ex.ValueKind == JsonValueKind.Object)
                {
                    var labels = ex.GetProperty("label").EnumerateArray().ToDictionary(l => l.GetProperty("name").GetString()!, l => l.GetProperty("value").GetString()!);
                    Assert.Contains(labels["trace_id"], sampled);
                    Assert.Equal(16, labels["span_id"].Length);
                    Assert.InRange(ex.GetProperty("value").GetDouble(), below, upper);
                    Assert.True(long.Parse(ex.GetProperty("timestamp").GetProperty("seconds").GetString()!, CultureInfo.InvariantCulture) > 1_700_000_000);
                    protobufExemplars++;
                }

                below = upper;
            }
        }

        Assert.Equal(exemplars.Count, protobufExemplars);

        // OTLP: HistogramDataPoint.exemplars with the trace and span ids as bytes (the decoder prints them as hex).
        OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();
        Assert.True(await exporter.ExportAsync(Ct));
        JsonElement otlp = OtlpReceiver.Decode(Assert.Single(receiver.Requests).Body);
        JsonElement scope = otlp.GetProperty("resourceMetrics")[0].GetProperty("scopeMetrics")[0];
        JsonElement points = scope.GetProperty("metrics").EnumerateArray().Single(m => m.GetProperty("name").GetString() == "http.server.request.duration").GetProperty("histogram").GetProperty("dataPoints");
        string[] otlpTraces = [.. points.EnumerateArray().SelectMany(p => p.TryGetProperty("exemplars", out JsonElement e) ? e.EnumerateArray() : []).Select(e => HexOf(e.GetProperty("traceId")))];
        Assert.Equal(exemplars.Count, otlpTraces.Length);
        Assert.All(otlpTraces, t => Assert.Contains(t, sampled));
    }

    [Fact]
    public async Task ExemplarsOff_SampledRequestsLeaveNone()
    {
        using ActivityListener listener = ParentBasedListener();
        await using TestApp app = await TestApp.StartAsync(o => o.Exemplars = false);
        await SendTraced(app, 10);
        Scrape om = await app.ScrapeAsync(openMetrics: true);
        Assert.Equal(10, om.Named("http_server_request_duration_seconds_count").Sum(s => s.Value));
        Assert.DoesNotContain(om.Samples, s => s.Exemplar is not null);
    }

    /// <summary>Sends <paramref name="n"/> requests, alternately with a sampled and an unsampled traceparent, each with its own trace id.</summary>
    private static async Task<(HashSet<string> Sampled, HashSet<string> Unsampled)> SendTraced(TestApp app, int n)
    {
        HashSet<string> sampled = [], unsampled = [];
        for (int i = 0; i < n; i++)
        {
            string trace = ActivityTraceId.CreateRandom().ToHexString();
            bool isSampled = i % 2 == 0;
            (isSampled ? sampled : unsampled).Add(trace);
            using var request = new HttpRequestMessage(HttpMethod.Get, i % 4 < 2 ? "/items/" + i : "/status/404");
            request.Headers.TryAddWithoutValidation("traceparent", $"00-{trace}-{ActivitySpanId.CreateRandom().ToHexString()}-{(isSampled ? "01" : "00")}");
            using HttpResponseMessage response = await app.Client.SendAsync(request, Ct);
        }

        return (sampled, unsampled);
    }

    /// <summary>What a tracer with parent-based sampling does: ASP.NET Core's request activity is recorded when the caller sampled.</summary>
    internal static ActivityListener ParentBasedListener()
    {
        var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == "Microsoft.AspNetCore",
            Sample = (ref ActivityCreationOptions<ActivityContext> options) =>
                (options.Parent.TraceFlags & ActivityTraceFlags.Recorded) != 0 ? ActivitySamplingResult.AllDataAndRecorded : ActivitySamplingResult.None,
        };
        ActivitySource.AddActivityListener(listener);
        return listener;
    }

    /// <summary>A bytes field as the decoder prints it (a Node Buffer, a Uint8Array, or base64) in lowercase hex.</summary>
    private static string HexOf(JsonElement id) => id.ValueKind switch
    {
        JsonValueKind.String => Convert.ToHexStringLower(Convert.FromBase64String(id.GetString()!)),
        JsonValueKind.Object when id.TryGetProperty("data", out JsonElement data) => Convert.ToHexStringLower([.. data.EnumerateArray().Select(b => b.GetByte())]),
        JsonValueKind.Object => Convert.ToHexStringLower([.. id.EnumerateObject().OrderBy(p => int.Parse(p.Name, CultureInfo.InvariantCulture)).Select(p => p.Value.GetByte())]),
        _ => throw new FormatException("not a bytes field: " + id),
    };

    [GeneratedRegex("""^\{(?<labels>trace_id="(?<trace>[0-9a-f]{32})",span_id="(?<span>[0-9a-f]{16})")\} (?<value>[0-9.eE+-]+) (?<ts>[0-9]+\.[0-9]{3})$""")]
    private static partial Regex OpenMetricsExemplar();
}

/// <summary>Tests that register a process-wide <see cref="ActivityListener"/> on ASP.NET Core's source run one at a time.</summary>
[CollectionDefinition(nameof(ActivityListenerCollection), DisableParallelization = true)]
public sealed class ActivityListenerCollection;
