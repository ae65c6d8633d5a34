using System.Diagnostics.Metrics;
using PerCpu.Families;
using PerCpu.Formats;

namespace PerCpu.Tests;

/// <summary>
/// A Meter API series is its tag set as exposed: whatever the values' types, the tags' order or a repeated key, one
/// exposed label set is one series, each instrument stays exact, and nothing the tags do reaches the caller.
/// </summary>
public sealed class ListenerIdentityTests
{
    private static string UniqueMeter() => "PerCpu.Tests." + Guid.NewGuid().ToString("N");

    private static KeyValuePair<string, object?> Tag(string key, object? value) => new(key, value);

    [Fact]
    public void OneValueAsIntLongShortAndString_IsOneSeries_OneSampleInTheScrape()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name]);
        Counter<long> requests = meter.CreateCounter<long>("requests");
        requests.Add(1, Tag("code", 200));
        requests.Add(1, Tag("code", 200L));
        requests.Add(1, Tag("code", (short)200));
        requests.Add(1, Tag("code", "200"));
        requests.Add(1, Tag("code", (byte)200));

        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Equal([("requests", "code=200")], w.Written);
        Assert.Equal(5, w.Points[("requests", "code=200")]);
        string text = PrometheusTextWriter.WriteToString(listener, openMetrics: false);
        Assert.Single(text.Split('\n'), l => l.StartsWith("requests_total{", StringComparison.Ordinal));
    }

    public static TheoryData<object?> Values()
    {
        var data = new TheoryData<object?>();
        foreach (object? v in new object?[] { 0, -5, 200, int.MinValue, long.MaxValue, long.MinValue, (short)-32768, (byte)255, 1.5, -0.0, 1.00m, true, null, "", "/api/v1/users/42/profile", new string('y', 5000), 'x', DayOfWeek.Friday })
        {
            data.Add(v);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Values))]
    public void EveryValue_HashesAndComparesAsItsRendering(object? value)
    {
        foreach (int max in new[] { 1024, 16 }) // 16: the route and long.MinValue are cut
        {
            string rendered = TagValues.Render(value, max);
            Assert.Equal(TagValues.HashChars(rendered), TagValues.ValueHash(value, max));
            Assert.Equal(TagValues.ValueHash(TagValues.Render(value), max), TagValues.ValueHash(value, max));
            Assert.True(TagValues.RendersAs(rendered, rendered, value, max));
            Assert.False(TagValues.RendersAs(rendered + "0", rendered + "0", value, max));
        }
    }

    [Fact]
    public void ValuesThatRenderAlike_AreOneSeries_ValuesThatRenderApart_AreTwo()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name]);
        Counter<long> c = meter.CreateCounter<long>("c");
        c.Add(1, Tag("flag", true));
        c.Add(1, Tag("flag", "true"));
        c.Add(1, Tag("v", 0.0));
        c.Add(1, Tag("v", -0.0)); // Equal to 0.0, but exposed as "-0"
        c.Add(1, Tag("d", 1.0m));
        c.Add(1, Tag("d", 1.00m)); // Equal to 1.0m, but exposed as "1.00"
        c.Add(1, Tag("n", null));
        c.Add(1, Tag("n", ""));

        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Equal(2, w.Points[("c", "flag=true")]);
        Assert.Equal(1, w.Points[("c", "v=0")]);
        Assert.Equal(1, w.Points[("c", "v=-0")]);
        Assert.Equal(1, w.Points[("c", "d=1.0")]);
        Assert.Equal(1, w.Points[("c", "d=1.00")]);
        Assert.Equal(2, w.Points[("c", "n=")]);
        Assert.Equal(w.Written.Count, w.Written.Distinct().Count());
    }

    [Fact]
    public void AKeyGivenTwice_TakesItsLastValue_NeverAnotherSeries()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name]);
        Counter<long> c = meter.CreateCounter<long>("c");

        // Keys that differ only where the old 4-character hash did not look: "aXcde" and "aYcde" hashed alike, and a
        // measurement naming "aXcde" twice matched the series of both keys.
        c.Add(1, Tag("aXcde", "v"), Tag("aYcde", "v"));
        c.Add(10, Tag("aXcde", "v"), Tag("aXcde", "v"));
        c.Add(100, Tag("k", "first"), Tag("k", "last"));
        c.Add(1000, Tag("k", "first"), Tag("j", "x"), Tag("k", "last"));

        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Equal(1, w.Points[("c", "aXcde=v,aYcde=v")]);
        Assert.Equal(10, w.Points[("c", "aXcde=v")]);
        Assert.Equal(100, w.Points[("c", "k=last")]);
        Assert.Equal(1000, w.Points[("c", "j=x,k=last")]);
        Assert.Equal(4, w.Written.Count);
    }

    [Fact]
    public void LongAndDoubleCountersOfOneName_EachStayExact_InOneFamily()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name]);
        Counter<long> whole = meter.CreateCounter<long>("work", "{unit}");
        Counter<double> fractional = meter.CreateCounter<double>("work", "{unit}");
        UpDownCounter<int> upInt = meter.CreateUpDownCounter<int>("level");
        UpDownCounter<double> upDouble = meter.CreateUpDownCounter<double>("level");
        for (int i = 0; i < 4; i++)
        {
            fractional.Add(0.5, Tag("q", "a"));
            upDouble.Add(-0.25);
        }

        whole.Add(3, Tag("q", "a"));
        whole.Add(7, Tag("q", "b"));
        fractional.Add(1.5, Tag("q", "c"));
        upInt.Add(5);

        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Single(w.Families, f => f.Name == "work");
        Assert.Equal(5, w.Points[("work", "q=a")]);
        Assert.Equal(7, w.Points[("work", "q=b")]);
        Assert.Equal(1.5, w.Points[("work", "q=c")]);
        Assert.Equal(4, w.Points[("level", "")]);
        Assert.Equal(4, w.Written.Count);
    }

    [Fact]
    public void ALongCounterAddedPastLongMaxValue_Saturates_AnUpDownCounterStillSums()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name]);
        Counter<long> c = meter.CreateCounter<long>("big");
        UpDownCounter<long> u = meter.CreateUpDownCounter<long>("level");
        c.Add(long.MaxValue);
        c.Add(long.MaxValue);
        u.Add(long.MaxValue);
        u.Add(long.MaxValue);
        u.Add(-long.MaxValue); // the cells wrap, the sum is right

        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Equal(long.MaxValue, w.Points[("big", "")]);
        Assert.Equal(long.MaxValue, w.Points[("level", "")]);
    }

    [Fact]
    public void AnInstrumentWithAnInvalidName_IsDroppedWithAWarning_NeverSilently()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        var warnings = new List<string>();
        using var listener = new PerCpuMeterListener([name], warn: warnings.Add);
        meter.CreateCounter<long>("orders placed!").Add(1);
        meter.CreateCounter<long>("9lives").Add(1);
        meter.CreateCounter<long>("fine").Add(1);

        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Equal(["fine"], w.Families.Select(f => f.Name));
        Assert.Equal(2, listener.DroppedInstruments);
        Assert.Equal(2, warnings.Count);
        Assert.Contains(warnings, m => m.Contains("'orders placed!'", StringComparison.Ordinal) && m.Contains(name, StringComparison.Ordinal));
        Assert.Contains(warnings, m => m.Contains("'9lives'", StringComparison.Ordinal));
    }

    [Fact]
    public void AHugeTagValue_IsCutToTheMaximumLength_MarkedAndCounted()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name], maxLabelValueLength: 64);
        var registry = new MetricRegistry(maxLabelValueLength: 64);
        registry.AddProducer(listener);
        Counter<long> c = meter.CreateCounter<long>("c");
        string huge = new('x', 10_000_000);
        c.Add(1, Tag("path", huge));
        c.Add(1, Tag("path", huge[..63] + "different tail")); // the same once cut: one series
        c.Add(1, Tag("path", new string('x', 64))); // exactly the maximum: not cut
        registry.CreateCounter("f", null, null, "v").WithLabels(huge).Increment();

        var w = new CollectingWriter();
        registry.Collect(w);
        string cut = new string('x', 63) + "\u2026";
        Assert.Equal(2, w.Points[("c", "path=" + cut)]);
        Assert.Equal(1, w.Points[("c", "path=" + new string('x', 64))]);
        Assert.Equal(1, w.Points[("f", "v=" + cut)]);
        Assert.Equal(1, listener.TruncatedLabelValues);
        Assert.Equal(2, w.Points[("percpu.label_values_truncated", "")]);
        Assert.True(PrometheusTextWriter.WriteToString(registry, openMetrics: false).Length < 4096);
    }

    [Fact]
    public void AnObservableCallbackThatBlocks_DoesNotStallTheCollection_KeepsItsLastValues_IsNotStartedTwice()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        var warnings = new List<string>();
        using var listener = new PerCpuMeterListener([name], warn: m => { lock (warnings) { warnings.Add(m); } }, callbackBudget: TimeSpan.FromSeconds(2)); // long enough for the first, quick runs even on a loaded machine
        using var gate = new ManualResetEventSlim();
        int stuckCalls = 0, fineCalls = 0;
        meter.CreateObservableGauge("stuck", () =>
        {
            if (Interlocked.Increment(ref stuckCalls) == 2)
            {
                gate.Wait(TimeSpan.FromSeconds(60)); // the second call blocks until the test lets it go
            }

            return (long)stuckCalls;
        });
        meter.CreateObservableGauge("fine", () => (long)Interlocked.Increment(ref fineCalls));

        var first = new CollectingWriter();
        listener.Collect(first);
        Assert.Equal(1, first.Points[("stuck", "")]);
        Assert.Equal(1, first.Points[("fine", "")]);

        var second = new CollectingWriter();
        listener.Collect(second); // returns while "stuck" still blocks: the gate is not open yet
        Assert.False(gate.IsSet);
        Assert.Equal(2, Volatile.Read(ref stuckCalls));
        Assert.Equal(1, second.Points[("stuck", "")]); // its last completed value
        Assert.Equal(2, second.Points[("fine", "")]);
        Assert.Equal(1, listener.SlowCallbacks);
        lock (warnings)
        {
            Assert.Contains(warnings, w => w.Contains("'stuck'", StringComparison.Ordinal));
        }

        var third = new CollectingWriter();
        listener.Collect(third);
        Assert.Equal(2, Volatile.Read(ref stuckCalls)); // not started again while it runs
        Assert.Equal(1, third.Points[("stuck", "")]);
        Assert.Equal(3, third.Points[("fine", "")]);
        Assert.Equal(2, listener.SlowCallbacks);

        gate.Set();
        Assert.True(SpinWait.SpinUntil(() =>
        {
            var w = new CollectingWriter();
            listener.Collect(w);
            return w.Points.TryGetValue(("stuck", ""), out double v) && v == 3;
        }, TimeSpan.FromSeconds(30)), "the callback ran again once it had returned");
    }

    [Fact]
    public void LabelsThePrometheusFormatsRename_AreCountedAndToldOncePerInstrumentAndRule()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        var warnings = new List<string>();
        using var listener = new PerCpuMeterListener([name], warn: warnings.Add);
        var registry = new MetricRegistry();
        registry.AddProducer(listener);
        Counter<long> joined = meter.CreateCounter<long>("joined");
        joined.Add(1, Tag("a.b", "1"), Tag("a_b", "2"));
        joined.Add(1, Tag("a.b", "3"), Tag("a_b", "4")); // a second series, the same rule: counted, not told again
        meter.CreateHistogram<double>("h").Record(1, Tag("le", "x"));
        meter.CreateCounter<long>("plain").Add(1, Tag("http.route", "/")); // sanitized as usual: no decision to tell

        var w = new CollectingWriter();
        registry.Collect(w);
        Assert.Equal(3, listener.RenamedLabelSets);
        Assert.Equal(3, w.Points[("percpu.labels_renamed", "")]);
        Assert.Equal(2, warnings.Count);
        Assert.Contains(warnings, m => m.Contains("'joined'", StringComparison.Ordinal) && m.Contains("joined with ';'", StringComparison.Ordinal));
        Assert.Contains(warnings, m => m.Contains("'h'", StringComparison.Ordinal) && m.Contains("'_le'", StringComparison.Ordinal));
    }

    [Fact]
    public void ObservableCounterPastTheCap_OverflowSeriesSumsWhatItStandsFor()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name], maxSeriesPerInstrument: 2);
        meter.CreateObservableCounter("jobs", () => new[]
        {
            new Measurement<long>(10, Tag("q", "a")),
            new Measurement<long>(20, Tag("q", "b")),
            new Measurement<long>(30, Tag("q", "c")),
            new Measurement<long>(20, Tag("q", "d")),
        });
        meter.CreateObservableGauge("temp", () => new[]
        {
            new Measurement<double>(1, Tag("room", "a")),
            new Measurement<double>(2, Tag("room", "b")),
            new Measurement<double>(3, Tag("room", "c")),
        });

        for (int round = 0; round < 2; round++)
        {
            var w = new CollectingWriter();
            listener.Collect(w);
            Assert.Equal(10, w.Points[("jobs", "q=a")]);
            Assert.Equal(20, w.Points[("jobs", "q=b")]);
            Assert.Equal(50, w.Points[("jobs", "otel.metric.overflow=true")]); // 30 + 20, again in every collection
            Assert.Equal(3, w.Points[("temp", "otel.metric.overflow=true")]); // a gauge's overflow: the last value
        }
    }

    [Fact]
    public void ATagValueWhoseToStringThrows_IsCountedInvalid_NeverReachesTheCaller()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name]);
        Counter<long> c = meter.CreateCounter<long>("c");
        Histogram<double> h = meter.CreateHistogram<double>("h");
        var hostile = new Hostile();
        for (int i = 0; i < 20; i++)
        {
            c.Add(1, Tag("who", hostile));
            h.Record(1, Tag("who", hostile), Tag("ok", "yes"));
            c.Add(1, Tag("who", "fine"));
        }

        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Equal(40, listener.InvalidMeasurements);
        Assert.Equal(20, w.Points[("c", "who=fine")]);
        Assert.Single(w.Written);
        Assert.Empty(w.Histograms);
    }

    [Fact]
    public void AdversarialPathValues_DoNotShareAProbeChain()
    {
        // 2,000 values of one shape and length that differ only in the middle: under the old hash (length and four
        // sampled characters) they were one hash and one chain 2,000 long. With a random seed, linear probing at a load of
        // at most one half gives a longest chain of a few dozen at most (24 was exceeded in about one run in four).
        var table = new TagSeriesTable<object>(5000, static () => new object());
        for (int i = 0; i < 2000; i++)
        {
            table.Find([Tag("http.route", $"/api/v1/users/{i:D6}/profile")]);
        }

        Assert.Equal(2000, table.Count);
        Assert.True(table.LongestChain() <= 128, $"longest chain {table.LongestChain()}");
    }

    [Fact]
    public void ManyMoreThreadsThanCores_CreatingAndOverflowing_EveryMeasurementCounted()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name], maxSeriesPerInstrument: 500);
        Counter<long> c = meter.CreateCounter<long>("c");
        const int Threads = 16, PerThread = 20_000;
        Stress.WritersWhileReading(Threads, t =>
        {
            for (int i = 0; i < PerThread; i++)
            {
                // Integer and string spellings of the same 1,000 values from every thread: 500 become series, the rest
                // overflow, while the table grows and the overflow series is created.
                int v = ((i * 7) + t) % 1000;
                c.Add(1, (i & 1) == 0 ? Tag("v", v) : Tag("v", v.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            }
        }, () => listener.Collect(new CollectingWriter()));

        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Equal((double)Threads * PerThread, w.Points.Where(p => p.Key.Family == "c").Sum(p => p.Value));
        Assert.Equal(501, w.Written.Count); // 500 series and the overflow series, each once
        Assert.Equal(w.Written.Count, w.Written.Distinct().Count());
    }

    private sealed class Hostile
    {
        public override string ToString() => throw new InvalidOperationException("a tag value that cannot be rendered");
    }
}
