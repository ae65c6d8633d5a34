using System.Buffers;
using System.Diagnostics.Metrics;
using System.Text.Json;
using PerCpu.AspNetCore.Internal;
using PerCpu.Families;
using PerCpu.Formats;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// Tag keys and instrument names that collide once exposed never make an invalid scrape, in any Prometheus format: the
/// writers are fed by a listener directly (no HTTP), their text checked by promtool and their protobuf decoded by
/// protobufjs.
/// </summary>
public sealed class HostileNamesTests
{
    [Fact]
    public async Task AHistogramTagNamedLe_IsExposedAsUnderscoreLe_NeverASecondLe()
    {
        Exposition e = await ExposeAsync(m => m.CreateHistogram<double>("latency", "s").Record(0.02, new KeyValuePair<string, object?>("le", "x")));
        Assert.Contains("latency_seconds_bucket{_le=\"x\",le=\"0.005\"} 0\n", e.Text, StringComparison.Ordinal);
        Assert.Contains("latency_seconds_bucket{_le=\"x\",le=\"0.005\"} 0\n", e.OpenMetrics, StringComparison.Ordinal);
        JsonElement metric = Family(e, "latency_seconds").GetProperty("metric")[0];
        Assert.Equal(["_le"], metric.GetProperty("label").EnumerateArray().Select(l => l.GetProperty("name").GetString()));
    }

    [Fact]
    public async Task KeysThatSanitizeToOneName_AreOneLabelInEveryFormat_ValuesJoinedInKeyOrder()
    {
        Exposition e = await ExposeAsync(m => m.CreateCounter<long>("joined").Add(1, new KeyValuePair<string, object?>("a_b", "2"), new KeyValuePair<string, object?>("a.b", "1")));
        Assert.Contains("joined_total{a_b=\"1;2\"} 1\n", e.Text, StringComparison.Ordinal);
        JsonElement label = Assert.Single(Family(e, "joined_total").GetProperty("metric")[0].GetProperty("label").EnumerateArray());
        Assert.Equal("a_b", label.GetProperty("name").GetString());
        Assert.Equal("1;2", label.GetProperty("value").GetString()); // "a.b" sorts before "a_b"
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task FamiliesWhoseExposedNamesCollide_TheLaterIsLeftOutAndCounted(bool gaugeFirst)
    {
        Exposition e = await ExposeAsync(lintAllowed: gaugeFirst, m =>
        {
            // A counter x is exposed as x_total; a gauge named like a histogram's _count takes one of its names.
            if (gaugeFirst)
            {
                m.CreateGauge<long>("dup_total").Record(9);
            }

            m.CreateCounter<long>("dup").Add(3);
            if (!gaugeFirst)
            {
                m.CreateGauge<long>("dup_total").Record(9);
            }

            m.CreateHistogram<double>("latency", "s").Record(0.02);
            m.CreateGauge<long>("latency_seconds_count").Record(7);
        });
        Assert.Contains(gaugeFirst ? "dup_total 9\n" : "dup_total 3\n", e.Text, StringComparison.Ordinal);
        Assert.DoesNotContain(gaugeFirst ? "dup_total 3\n" : "dup_total 9\n", e.Text, StringComparison.Ordinal);
        Assert.DoesNotContain("latency_seconds_count 7\n", e.Text, StringComparison.Ordinal);
        Assert.Contains("percpu_metric_name_conflicts_total 2\n", e.Text, StringComparison.Ordinal);
        Assert.Contains("percpu_metric_name_conflicts_total 2\n", e.OpenMetrics, StringComparison.Ordinal);
        Assert.Equal(2, Family(e, "percpu_metric_name_conflicts_total").GetProperty("metric")[0].GetProperty("counter").GetProperty("value").GetDouble());
    }

    [Fact]
    public async Task ATenMillionCharacterTagValue_IsCutInEveryFormat_TheScrapeStaysSmall()
    {
        string huge = new('v', 10_000_000);
        Exposition e = await ExposeAsync(m => m.CreateCounter<long>("paths").Add(1, new KeyValuePair<string, object?>("path", huge)));
        string cut = new string('v', 1023) + "\u2026";
        Assert.Contains("paths_total{path=\"" + cut + "\"} 1\n", e.Text, StringComparison.Ordinal);
        Assert.True(e.Text.Length < 8192, $"{e.Text.Length} characters");
        Assert.Equal(cut, Family(e, "paths_total").GetProperty("metric")[0].GetProperty("label")[0].GetProperty("value").GetString());
    }

    private sealed record Exposition(string Text, string OpenMetrics, JsonElement Families);

    private static JsonElement Family(Exposition e, string name) =>
        e.Families.EnumerateArray().Single(f => f.GetProperty("name").GetString() == name);

    /// <summary>
    /// The three Prometheus formats of one listener's instruments: the text checked by promtool, OpenMetrics by the
    /// Prometheus Python client's parser, the protobuf decoded by protobufjs and checked for unique family names, unique
    /// label names per series and no <c>le</c> label on a histogram.
    /// </summary>
    private static async Task<Exposition> ExposeAsync(Action<Meter> instruments) => await ExposeAsync(lintAllowed: false, instruments);

    /// <summary>The same; <paramref name="lintAllowed"/>: promtool's lint rules may complain (a gauge the app named x_total), parse errors still fail.</summary>
    private static async Task<Exposition> ExposeAsync(bool lintAllowed, Action<Meter> instruments)
    {
        string name = "Hostile" + Guid.NewGuid().ToString("N")[..8];
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name]);
        instruments(meter);

        string text = PrometheusTextWriter.WriteToString(listener, openMetrics: false);
        await ExpositionTests.AssertPromtoolAccepts(text, lintAllowed);
        string open = PrometheusTextWriter.WriteToString(listener, openMetrics: true);
        await ExpositionTests.AssertOpenMetricsParses(open);

        JsonElement families = DecodeValidProtobuf(listener);
        return new Exposition(text, open, families);
    }

    /// <summary>
    /// The protobuf exposition of <paramref name="producer"/>, decoded by protobufjs and checked as Prometheus would
    /// take it: unique family names, unique and valid label names in each series, no <c>le</c> label on a histogram.
    /// </summary>
    internal static JsonElement DecodeValidProtobuf(IMetricsProducer producer)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using var protobuf = new PrometheusProtobufWriter(buffer);
        producer.Collect(protobuf);
        protobuf.Finish();
        JsonElement families = OtlpReceiver.RunDecoder("prom-decode.js", "protobufjs", buffer.WrittenSpan.ToArray(), "protobufjs with Prometheus's metrics.proto field numbers");
        string[] familyNames = [.. families.EnumerateArray().Select(f => f.GetProperty("name").GetString()!)];
        Assert.Equal(familyNames.Length, familyNames.Distinct().Count());
        foreach (JsonElement family in families.EnumerateArray())
        {
            foreach (JsonElement metric in family.GetProperty("metric").EnumerateArray())
            {
                string[] labels = [.. metric.GetProperty("label").EnumerateArray().Select(l => l.GetProperty("name").GetString()!)];
                Assert.Equal(labels.Length, labels.Distinct().Count());
                Assert.All(labels, l => Assert.Matches("^[a-zA-Z_][a-zA-Z0-9_]*$", l));
                if (family.GetProperty("type").GetString() == "HISTOGRAM")
                {
                    Assert.DoesNotContain("le", labels);
                }
            }
        }

        return families;
    }
}
