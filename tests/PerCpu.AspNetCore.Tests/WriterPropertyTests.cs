using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text.Json;
using CsCheck;
using PerCpu.AspNetCore.Internal;
using PerCpu.Families;
using PerCpu.Formats;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// Property tests over the Prometheus writers: random instrument names, units, descriptions, tag keys and values (any
/// Unicode, control characters, empty, long, reserved, colliding) and values (NaN, infinities, extremes, negative zero),
/// recorded through the Meter API, then every output checked by real parsers: promtool on the text format, the
/// Prometheus Python client's OpenMetrics parser on OpenMetrics, protobufjs
/// on the protobuf format, OpenTelemetry JS on the OTLP encoding, and each counter's total read back from the text and
/// from OTLP equal to what was recorded. A fixed seed
/// in the default run; <c>PERCPU_PROPERTY_ITERATIONS</c> (and <c>PERCPU_PROPERTY_SEED</c>) for a longer one.
/// </summary>
public sealed class WriterPropertyTests
{
    private const string Seed = "0N0XIzNsQ0O2";

    private static readonly Gen<string> s_text = Gen.OneOf(
        Gen.String[0, 12],
        Gen.Char["abcXYZ019._-/ :\"\\\n\r\t{}=,#\u00e9\u00fc\u4e2d\U0001F600\u0000\u0007"].Array[0, 16].Select(c => new string(c)),
        Gen.OneOf("le", "a.b", "a_b", "__name__", "quantile", "", "9lives", "http.route", "x_total", "x"));

    private static readonly Gen<string> s_name = Gen.OneOf(
        Gen.Char["abcxyz._-/019"].Array[1, 12].Select(c => "m" + new string(c)), // valid: starts with a letter
        s_text,
        Gen.OneOf("dup", "dup_total", "h", "h_count", "h_bucket", "le"));

    private static readonly Gen<string?> s_unit = Gen.OneOf<string?>("s", "ms", "By", "{req}", "1", "", null, "By/s", "\u00b5s", "weird unit\n");

    private static readonly Gen<object?> s_value = Gen.OneOf<object?>(
        s_text.Select(s => (object?)s),
        Gen.Int.Select(i => (object?)i),
        Gen.Bool.Select(b => (object?)b),
        Gen.OneOf<object?>(null, 200, "200", 200L, -0.0, double.NaN, new string('v', 3000)));

    private static readonly Gen<double> s_double = Gen.OneOf(
        Gen.Double[-1e6, 1e6],
        Gen.OneOf(double.NaN, double.PositiveInfinity, double.NegativeInfinity, -0.0, 0.0, double.MaxValue, double.Epsilon, 1e-300, 1e300));

    private static readonly Gen<Spec> s_spec = Gen.Select(
        Gen.Int[0, 2], s_name, s_unit, s_text, Gen.Select(s_text, s_value).Array[0, 3], Gen.Select(Gen.Long[0, 1_000_000], s_double).Array[1, 4],
        (kind, name, unit, description, tags, values) => new Spec(kind, name, unit, description, tags, values));

    [Fact]
    public async Task AnyNamesTagsAndValues_EveryFormatParses_CountersReadBackExactly()
    {
        int iterations = int.TryParse(Environment.GetEnvironmentVariable("PERCPU_PROPERTY_ITERATIONS"), CultureInfo.InvariantCulture, out int n) ? n : 12;
        string seed = Environment.GetEnvironmentVariable("PERCPU_PROPERTY_SEED") ?? Seed;
        await s_spec.Array[1, 12].SampleAsync(CheckAsync, seed: seed, iter: iterations, threads: 1);
    }

    private static async Task CheckAsync(Spec[] specs)
    {
        string meterName = "Prop" + Guid.NewGuid().ToString("N")[..8];
        using var meter = new Meter(meterName);
        using var listener = new PerCpuMeterListener([meterName]);
        foreach (Spec spec in specs)
        {
            KeyValuePair<string, object?>[] tags = [.. spec.Tags.Select(t => new KeyValuePair<string, object?>(t.Key, t.Value))];
            switch (spec.Kind)
            {
                case 0:
                    Counter<long> counter = meter.CreateCounter<long>(spec.Name, spec.Unit, spec.Description);
                    foreach ((long whole, double _) in spec.Values)
                    {
                        counter.Add(whole, tags);
                    }

                    break;
                case 1:
                    Gauge<double> gauge = meter.CreateGauge<double>(spec.Name, spec.Unit, spec.Description);
                    foreach ((long _, double v) in spec.Values)
                    {
                        gauge.Record(v, tags);
                    }

                    break;
                default:
                    Histogram<double> histogram = meter.CreateHistogram<double>(spec.Name, spec.Unit, spec.Description);
                    foreach ((long _, double v) in spec.Values)
                    {
                        histogram.Record(v, tags);
                    }

                    break;
            }
        }

        string text = PrometheusTextWriter.WriteToString(listener, openMetrics: false);
        await ExpositionTests.AssertPromtoolAccepts(text, lintAllowed: true);
        Scrape scrape = Scrape.Parse(text);
        JsonElement openMetrics = await ExpositionTests.AssertOpenMetricsParses(PrometheusTextWriter.WriteToString(listener, openMetrics: true));

        // Every counter whose exposed names no other instrument of the sample takes reads back its total exactly.
        var owners = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal); // exposed name -> instrument identities
        foreach (Spec spec in specs)
        {
            if (Descriptor(spec) is { } d)
            {
                foreach (string exposed in PrometheusNaming.For(d).Reserved)
                {
                    (owners.TryGetValue(exposed, out HashSet<string>? set) ? set : owners[exposed] = []).Add(spec.Identity);
                }
            }
        }

        foreach (Spec spec in specs.Where(s => s.Kind == 0).DistinctBy(s => s.Identity))
        {
            if (Descriptor(spec) is not { } d || PrometheusNaming.For(d).Reserved.Any(n => owners[n].Count > 1))
            {
                continue; // an invalid name (dropped, with a warning) or a name conflict (left out, counted)
            }

            PrometheusNames names = PrometheusNaming.For(d);
            long total = specs.Where(s => s.Identity == spec.Identity).Sum(s => s.Values.Sum(v => v.Whole));
            Assert.Contains("# TYPE " + names.TextFamilyName + " counter\n", text, StringComparison.Ordinal);
            Assert.Equal(total, scrape.Named(names.TextFamilyName).Sum(s => s.Value));
            JsonElement family = openMetrics.EnumerateArray().Single(f => f.GetProperty("name").GetString() == names.Name);
            Assert.Equal(total, family.GetProperty("samples").EnumerateArray().Where(x => x[0].GetString() == names.SampleName).Sum(x => x[2].GetDouble()));
        }

        CheckOtlp(listener, specs);

        HostileNamesTests.DecodeValidProtobuf(listener);
    }

    private static MetricDescriptor? Descriptor(Spec spec)
    {
        try
        {
            return new MetricDescriptor(spec.Name, spec.Kind switch { 0 => MetricType.Counter, 1 => MetricType.Gauge, _ => MetricType.Histogram }, spec.Unit, spec.Description);
        }
        catch (ArgumentException)
        {
            return null;
        }
    }

    /// <summary>
    /// The OTLP encoding of the same listener, decoded by OpenTelemetry JS: it verifies, keeps the original instrument
    /// names, and each counter's points sum to what was recorded.
    /// </summary>
    private static void CheckOtlp(PerCpuMeterListener listener, Spec[] specs)
    {
        var batch = new PerCpu.AspNetCore.Otlp.OtlpBatch(1, 1, PerCpu.AspNetCore.OtlpTemporality.Cumulative, HttpMetricsProducer.Duration, [],
            PerCpu.AspNetCore.Otlp.OtlpFamilyCollector.Collect(null, null, listener));
        JsonElement request = OtlpReceiver.Decode(PerCpu.AspNetCore.Otlp.OtlpMetricsEncoder.Encode(batch, new Dictionary<string, string> { ["service.name"] = "prop" }, exponential: false));
        JsonElement[] metrics = [.. request.GetProperty("resourceMetrics")[0].GetProperty("scopeMetrics").EnumerateArray().SelectMany(s => s.GetProperty("metrics").EnumerateArray())];
        // OTLP sends the first family of a name (as /metrics does): where that is a counter, its points hold every add to
        // counters of its definition. Matched by name only: a description with a lone surrogate does not survive UTF-8.
        foreach (IGrouping<string, (Spec Spec, MetricDescriptor Descriptor)> byName in specs
            .Select(s => (Spec: s, Descriptor: Descriptor(s)!)).Where(x => x.Descriptor is not null).GroupBy(x => x.Spec.Name))
        {
            (Spec first, MetricDescriptor winner) = byName.First();
            if (first.Kind != 0)
            {
                continue;
            }

            long total = metrics
                .Where(m => m.GetProperty("name").GetString() == byName.Key && m.TryGetProperty("sum", out _))
                .SelectMany(m => m.GetProperty("sum").GetProperty("dataPoints").EnumerateArray())
                .Sum(p => long.Parse(p.GetProperty("asInt").GetString()!, CultureInfo.InvariantCulture));
            Assert.Equal(byName.Where(x => x.Descriptor.Equals(winner)).Sum(x => x.Spec.Values.Sum(v => v.Whole)), total);
        }
    }

    /// <summary>One instrument: kind 0 counter, 1 gauge, 2 histogram.</summary>
    public sealed record Spec(int Kind, string Name, string? Unit, string Description, (string Key, object? Value)[] Tags, (long Whole, double Value)[] Values)
    {
        /// <summary>What makes two instruments one family in the listener: kind, name, unit and description.</summary>
        public string Identity => $"{Kind}\u0000{Name}\u0000{Unit}\u0000{Description}";

        public override string ToString() =>
            $"{Kind} '{Name}' unit '{Unit}' tags [{string.Join(", ", Tags.Select(t => $"'{t.Key}'='{t.Value}'"))}] values [{string.Join(", ", Values)}]";
    }
}
