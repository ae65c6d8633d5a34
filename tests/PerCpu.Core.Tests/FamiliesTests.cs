using System.Diagnostics.Metrics;
using PerCpu.Families;
using PerCpu.Formats;

namespace PerCpu.Tests;

/// <summary>What a writer received: families in order, and each point by family and label text.</summary>
internal sealed class CollectingWriter : IMetricsWriter
{
    private MetricDescriptor? _current;

    public List<MetricDescriptor> Families { get; } = [];

    public Dictionary<(string Family, string Labels), double> Points { get; } = [];

    public Dictionary<(string Family, string Labels), HistogramSnapshot> Histograms { get; } = [];

    public long Invalid { get; private set; }

    /// <summary>Every point written, in order, duplicates included.</summary>
    public List<(string Family, string Labels)> Written { get; } = [];

    public static string Key(MetricLabels labels) => string.Join(",", labels.Names.Zip(labels.Values, (n, v) => n + "=" + v));

    public void BeginFamily(MetricDescriptor descriptor)
    {
        _current = descriptor;
        Families.Add(descriptor);
    }

    public void WritePoint(MetricLabels labels, double value)
    {
        Points[(_current!.Name, Key(labels))] = value;
        Written.Add((_current.Name, Key(labels)));
    }

    public void WritePoint(MetricLabels labels, long value) => WritePoint(labels, (double)value);

    public void WriteHistogram(MetricLabels labels, PerCpuHistogram histogram)
    {
        HistogramSnapshot snapshot = histogram.Snapshot();
        Histograms[(_current!.Name, Key(labels))] = snapshot;
        Invalid += snapshot.Invalid;
    }

    public void AddInvalid(long count) => Invalid += count;
}

public sealed class NamingTests
{
    [Theory]
    [InlineData("shop.orders", MetricType.Counter, "{order}", "shop_orders_total", "shop_orders", null)]
    [InlineData("shop.checkout.duration", MetricType.Histogram, "s", "shop_checkout_duration_seconds", "shop_checkout_duration_seconds", "seconds")]
    [InlineData("http.server.request.duration", MetricType.Histogram, "s", "http_server_request_duration_seconds", "http_server_request_duration_seconds", "seconds")]
    [InlineData("kestrel.active_connections", MetricType.UpDownCounter, "{connection}", "kestrel_active_connections", "kestrel_active_connections", null)]
    [InlineData("aspnetcore.routing.match_attempts", MetricType.Counter, "{match_attempt}", "aspnetcore_routing_match_attempts_total", "aspnetcore_routing_match_attempts", null)]
    [InlineData("dotnet.gc.heap.total_allocated", MetricType.Counter, "By", "dotnet_gc_heap_total_allocated_bytes_total", "dotnet_gc_heap_total_allocated_bytes", "bytes")]
    [InlineData("net.io", MetricType.Gauge, "By/s", "net_io_bytes_per_second", "net_io_bytes_per_second", "bytes_per_second")]
    [InlineData("events.rate", MetricType.Gauge, "{event}/s", "events_rate_per_second", "events_rate_per_second", "per_second")]
    [InlineData("cpu.utilization", MetricType.Gauge, "1", "cpu_utilization", "cpu_utilization", null)] // no _ratio: the .NET exporter adds none
    [InlineData("cpu.utilization", MetricType.Counter, "1", "cpu_utilization_total", "cpu_utilization", null)]
    [InlineData("requests_total", MetricType.Counter, null, "requests_total", "requests", null)]
    [InlineData("latency_seconds", MetricType.Histogram, "s", "latency_seconds", "latency_seconds", "seconds")]
    [InlineData("a..b--c/d", MetricType.Gauge, "ms", "a_b_c_d_milliseconds", "a_b_c_d_milliseconds", "milliseconds")]
    public void Names_FollowOpenTelemetryPrometheusRules(string name, MetricType type, string? unit, string textName, string familyName, string? promUnit)
    {
        PrometheusNames names = PrometheusNaming.For(new MetricDescriptor(name, type, unit));
        Assert.Equal(textName, names.TextFamilyName);
        Assert.Equal(familyName, names.Name);
        Assert.Equal(promUnit, names.Unit);
    }

    [Theory]
    [InlineData("http.route", "http_route")]
    [InlineData("9lives", "_9lives")]
    [InlineData("a-b c", "a_b_c")]
    [InlineData("ünïcode", "_n_code")]
    [InlineData("le:x", "le_x")]
    public void LabelNames_AreSanitized(string key, string expected) => Assert.Equal(expected, PrometheusNaming.SanitizeLabel(key));

    [Theory]
    [InlineData("")]
    [InlineData("1abc")]
    [InlineData("has space")]
    [InlineData("quote\"")]
    public void InvalidMetricNames_Throw(string name) =>
        Assert.Throws<ArgumentException>(() => new MetricDescriptor(name, MetricType.Counter));

    [Fact]
    public void TextWriter_MergesLabelsThatSanitizeToOneName_AndLeavesOutNameConflicts()
    {
        var text = new System.Buffers.ArrayBufferWriter<byte>();
        var w = new PrometheusTextWriter(text, openMetrics: false);
        w.BeginFamily(new MetricDescriptor("shop.dup", MetricType.Gauge));
        w.WritePoint(new MetricLabels(["a.b", "a_b", "q"], ["2", "1", "x\"y\nz\\"]), 1L);
        w.BeginFamily(new MetricDescriptor("shop_dup", MetricType.Gauge)); // same Prometheus name: left out
        w.WritePoint(MetricLabels.Empty, 2L);
        w.Finish();
        string s = System.Text.Encoding.UTF8.GetString(text.WrittenSpan);
        Assert.Contains("shop_dup{a_b=\"2;1\",q=\"x\\\"y\\nz\\\\\"} 1\n", s, StringComparison.Ordinal);
        Assert.DoesNotContain("shop_dup 2", s, StringComparison.Ordinal);
        Assert.Contains("percpu_metric_name_conflicts_total 1\n", s, StringComparison.Ordinal);
        Assert.Equal(1, w.NameConflicts);
    }
}

public sealed class TextWriterTests
{
    [Fact]
    public void HelpText_IsEscapedAsEachFormatAsks()
    {
        var registry = new MetricRegistry();
        registry.CreateCounter("c", null, "say \"hi\" \\ and\nmore").WithLabels().Increment();
        string open = PrometheusTextWriter.WriteToString(registry, openMetrics: true);
        string text = PrometheusTextWriter.WriteToString(registry, openMetrics: false);

        // OpenMetrics escapes backslash, newline and double quote in # HELP; the 0.0.4 text format the first two only.
        Assert.Contains("# HELP c say \\\"hi\\\" \\\\ and\\nmore\n", open, StringComparison.Ordinal);
        Assert.Contains("# HELP c_total say \"hi\" \\\\ and\\nmore\n", text, StringComparison.Ordinal);
    }
}

public sealed class OpenMetricsNumberTests
{
    [Fact]
    public void OpenMetricsLe_IsTheCanonicalFloat_TheTextFormatKeepsItsOwn()
    {
        var registry = new MetricRegistry();
        registry.CreateHistogram("q.wait", "ms", null, [1e-5, 1, 2.5, 10]).WithLabels().Record(3);
        string open = PrometheusTextWriter.WriteToString(registry, openMetrics: true);
        string text = PrometheusTextWriter.WriteToString(registry, openMetrics: false);
        string[] openLe = [.. open.Split('\n').Where(l => l.StartsWith("q_wait_milliseconds_bucket{", StringComparison.Ordinal)).Select(l => l[(l.IndexOf("le=\"", StringComparison.Ordinal) + 4)..l.IndexOf("\"}", StringComparison.Ordinal)])];
        Assert.Equal(["1E-05", "1.0", "2.5", "10.0", "+Inf"], openLe);
        Assert.Contains("q_wait_milliseconds_bucket{le=\"10\"} 1\n", text, StringComparison.Ordinal);
        Assert.Equal("0.005", PrometheusTextWriter.CanonicalNumber(0.005));
        Assert.Equal("-3.0", PrometheusTextWriter.CanonicalNumber(-3));
    }
}

public sealed class RegistryTests
{
    [Fact]
    public void SameDefinitionTwice_ReturnsTheSameFamily_ConflictThrowsNamingBoth()
    {
        var registry = new MetricRegistry();
        CounterFamily a = registry.CreateCounter("shop.orders", "{order}", "Orders.", "region");
        Assert.Same(a, registry.CreateCounter("shop.orders", "{order}", "Orders.", "region"));
        InvalidOperationException e = Assert.Throws<InvalidOperationException>(() => registry.CreateCounter("shop.orders", "{order}", "Orders.", "region", "channel"));
        Assert.Contains("labels [region]", e.Message, StringComparison.Ordinal);
        Assert.Contains("labels [region, channel]", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<InvalidOperationException>(() => registry.CreateGauge("shop.orders", "{order}", "Orders.", "region"));
        Assert.Contains("Counter 'shop.orders'", e.Message, StringComparison.Ordinal);
        Assert.Contains("Gauge 'shop.orders'", e.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => registry.CreateHistogram("h", "s", null, [1, 2]) is var _ && registry.CreateHistogram("h", "s", null, [1, 3]) is var _);
    }

    [Fact]
    public void LabelValues_AreValidated()
    {
        CounterFamily family = new MetricRegistry().CreateCounter("c", null, null, "a", "b");
        Assert.Throws<ArgumentException>(() => family.WithLabels("x"));
        Assert.Throws<ArgumentException>(() => family.WithLabels("x", null!));
        Assert.Same(family.WithLabels("x", "y"), family.WithLabels("x", "y"));
        Assert.NotSame(family.WithLabels("x", "y"), family.WithLabels("y", "x"));
        Assert.Throws<ArgumentException>(() => new MetricRegistry().CreateCounter("c", null, null, "a", "a"));
        Assert.Throws<ArgumentException>(() => new MetricRegistry().CreateCounter("c", null, null, "__reserved"));
    }

    [Fact]
    public void ChildrenBeyondTheCap_ShareTheOverflowChild_NothingLost()
    {
        var registry = new MetricRegistry(maxSeriesPerFamily: 10);
        CounterFamily family = registry.CreateCounter("flood", null, null, "path");
        for (int i = 0; i < 10_000; i++)
        {
            family.WithLabels("/p/" + i).Increment();
        }

        var w = new CollectingWriter();
        registry.Collect(w);
        Assert.Equal(10, family.SeriesCount);
        Assert.Equal(9_990, family.OverflowRequests);
        Assert.Equal(11, w.Points.Count);
        Assert.Equal(9_990, w.Points[("flood", "otel.metric.overflow=true")]);
        Assert.Equal(10_000, w.Points.Values.Sum());
    }

    [Fact]
    public void FamilyChildren_ManyMoreThreadsThanCores_Exact()
    {
        var registry = new MetricRegistry();
        CounterFamily counter = registry.CreateCounter("c", null, null, "k");
        UpDownCounterFamily upDown = registry.CreateUpDownCounter("u", null, null, "k");
        HistogramFamily histogram = registry.CreateHistogram("h", "s", null, null, "k");
        const int Threads = 16, PerThread = 50_000;
        Stress.WritersWhileReading(Threads, t =>
        {
            PerCpuCounter c = counter.WithLabels("k" + (t % 4));
            PerCpuUpDownCounter u = upDown.WithLabels("k" + (t % 4));
            PerCpuHistogram h = histogram.WithLabels("k" + (t % 4));
            for (int i = 0; i < PerThread; i++)
            {
                c.Increment();
                u.Add(t % 2 == 0 ? 2 : -1);
                h.Record(0.001 * (1 + (i % 7)));
            }
        }, () => registry.Collect(new CollectingWriter()));
        var w = new CollectingWriter();
        registry.Collect(w);
        for (int k = 0; k < 4; k++)
        {
            Assert.Equal(4.0 * PerThread, w.Points[("c", "k=k" + k)]);
            Assert.Equal(4.0 * PerThread * (k % 2 == 0 ? 2 : -1), w.Points[("u", "k=k" + k)]);
            Assert.Equal(4L * PerThread, w.Histograms[("h", "k=k" + k)].Count);
        }
    }
}

public sealed class MeterListenerTests
{
    private static string UniqueMeter() => "PerCpu.Tests." + Guid.NewGuid().ToString("N");

    [Fact]
    public void EveryInstrumentKind_ManyMoreThreadsThanCores_ExactPerTagSet()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name]);
        Counter<long> orders = meter.CreateCounter<long>("shop.orders", "{order}");
        Counter<double> revenue = meter.CreateCounter<double>("shop.revenue", "{EUR}");
        UpDownCounter<int> queue = meter.CreateUpDownCounter<int>("shop.queue.depth");
        Histogram<double> duration = meter.CreateHistogram<double>("shop.checkout.duration", "s");
        Histogram<long> size = meter.CreateHistogram("shop.basket.size", "{item}", null, null, new InstrumentAdvice<long> { HistogramBucketBoundaries = [1, 2, 5, 10] });
        Gauge<int> temperature = meter.CreateGauge<int>("shop.temperature", "Cel");
        const int Threads = 16, PerThread = 40_000;
        string[] regions = ["eu", "us", "apac", "latam"];
        Stress.WritersWhileReading(Threads, t =>
        {
            string region = regions[t % 4];
            // Half the threads give the tags in the other order: the same series either way.
            KeyValuePair<string, object?> r = new("region", region), p = new("payment", "card");
            for (int i = 0; i < PerThread; i++)
            {
                if (t % 2 == 0)
                {
                    orders.Add(1, r, p);
                    duration.Record(0.25, r, p);
                }
                else
                {
                    orders.Add(1, p, r);
                    duration.Record(0.25, p, r);
                }

                revenue.Add(0.5, r);
                queue.Add(t % 2 == 0 ? 1 : -1, r);
                size.Record(1 + (i % 10), r);
            }

            temperature.Record(21, r);
        }, () => listener.Collect(new CollectingWriter()));

        var w = new CollectingWriter();
        listener.Collect(w);
        foreach (string region in regions)
        {
            Assert.Equal(4.0 * PerThread, w.Points[("shop.orders", $"payment=card,region={region}")]);
            Assert.Equal(4.0 * PerThread * 0.5, w.Points[("shop.revenue", $"region={region}")]);
            // Threads of even regions add 1, of odd regions -1.
            Assert.Equal(4.0 * PerThread * (Array.IndexOf(regions, region) % 2 == 0 ? 1 : -1), w.Points[("shop.queue.depth", $"region={region}")]);
            Assert.Equal(21.0, w.Points[("shop.temperature", $"region={region}")]);
            HistogramSnapshot d = w.Histograms[("shop.checkout.duration", $"payment=card,region={region}")];
            Assert.Equal(4L * PerThread, d.Count);
            Assert.Equal(4.0 * PerThread * 0.25, d.Sum);
            HistogramSnapshot s = w.Histograms[("shop.basket.size", $"region={region}")];
            Assert.Equal(4L * PerThread, s.Count);
            Assert.Equal([1.0, 2, 5, 10], s.ExplicitBoundaries);
            // Values 1..10 evenly: le=1 holds a tenth, le=2 two tenths, le=5 half, le=10 all.
            Assert.Equal([4L * PerThread / 10, 4L * PerThread / 5, 4L * PerThread / 2, 4L * PerThread], s.CumulativeCounts);
        }

        Assert.Equal(4 * 2, w.Points.Keys.Count(k => k.Family is "shop.orders" or "shop.revenue"));
    }

    [Fact]
    public void MetersNotListed_AreNotCollected_WildcardsMatchPrefixes()
    {
        string name = UniqueMeter();
        using var listened = new Meter(name + ".Orders");
        using var other = new Meter("Unlisted." + name);
        using var listener = new PerCpuMeterListener([name + ".*"], excludedMeters: [name + ".Excluded"]);
        using var excluded = new Meter(name + ".Excluded");
        listened.CreateCounter<long>("yes").Add(1);
        other.CreateCounter<long>("no").Add(1);
        excluded.CreateCounter<long>("excluded").Add(1);
        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Equal(["yes"], w.Families.Select(f => f.Name));
        Assert.True(listener.Listens(name + ".Anything"));
        Assert.False(listener.Listens(name + ".Excluded"));
    }

    [Fact]
    public void BadInput_IsCountedOrCapped_NeverThrown()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name], maxSeriesPerInstrument: 100);
        Counter<long> c = meter.CreateCounter<long>("c");
        Counter<double> cd = meter.CreateCounter<double>("cd");
        Histogram<double> h = meter.CreateHistogram<double>("h");
        c.Add(-5);
        cd.Add(double.NaN);
        cd.Add(double.PositiveInfinity);
        cd.Add(-1.5);
        h.Record(double.NaN);
        h.Record(-1);
        for (int i = 0; i < 10_000; i++)
        {
            c.Add(1, new KeyValuePair<string, object?>("path", "/random/" + i));
        }

        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Equal(4, listener.InvalidMeasurements);
        Assert.Equal(4 + 2, w.Invalid); // plus the histogram's NaN and negative value
        Assert.Equal(101, w.Points.Keys.Count(k => k.Family == "c"));
        Assert.Equal(10_000, w.Points.Where(p => p.Key.Family == "c").Sum(p => p.Value));
        Assert.Equal(9_900, w.Points[("c", "otel.metric.overflow=true")]);
    }

    [Fact]
    public void HistogramAdvice_WithoutAValidLayout_FallsBackToTheDefaults_NeverThrows()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name]);
        // The BCL itself refuses unordered advice; what it lets through that no layout can hold: a subnormal boundary.
        Histogram<double> vastSeconds = meter.CreateHistogram("vast.seconds", "s", null, null, new InstrumentAdvice<double> { HistogramBucketBoundaries = [1e-320, 1] });
        Histogram<double> vast = meter.CreateHistogram("vast", null, null, null, new InstrumentAdvice<double> { HistogramBucketBoundaries = [1e-300, 1e300] });
        Histogram<double> signed = meter.CreateHistogram("signed", null, null, null, new InstrumentAdvice<double> { HistogramBucketBoundaries = [-1, 0, 0.5] });
        vastSeconds.Record(0.3);
        vast.Record(42);
        signed.Record(0.25);
        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Equal(HistogramLayout.AspNetCoreRequestDurationBoundaries, w.Histograms[("vast.seconds", "")].ExplicitBoundaries);
        // A range of 2^2000 fits at a lower scale: the advice is kept, and a shard stays small.
        Assert.Equal([1e-300, 1e300], w.Histograms[("vast", "")].ExplicitBoundaries);
        Assert.Equal(0, w.Histograms[("vast", "")].Scale);
        Assert.Equal([0.5], w.Histograms[("signed", "")].ExplicitBoundaries); // boundaries at or below zero are left out
        Assert.Equal(1, w.Histograms[("vast", "")].Count);
    }

    [Fact]
    public void ObservableInstruments_AreReadAtCollection_SeriesNotReportedAreLeftOut()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name]);
        int calls = 0;
        meter.CreateObservableCounter("jobs.done", () =>
        {
            calls++;
            return calls == 1
                ? [new Measurement<long>(5, new KeyValuePair<string, object?>("queue", "a")), new Measurement<long>(7, new KeyValuePair<string, object?>("queue", "b"))]
                : new[] { new Measurement<long>(9, new KeyValuePair<string, object?>("queue", "a")) };
        });
        meter.CreateObservableGauge("temp", () => 1.5);
        var first = new CollectingWriter();
        listener.Collect(first);
        Assert.Equal(5, first.Points[("jobs.done", "queue=a")]);
        Assert.Equal(7, first.Points[("jobs.done", "queue=b")]);
        Assert.Equal(1.5, first.Points[("temp", "")]);
        var second = new CollectingWriter();
        listener.Collect(second);
        Assert.Equal(9, second.Points[("jobs.done", "queue=a")]);
        Assert.False(second.Points.ContainsKey(("jobs.done", "queue=b")));
        Assert.Equal(2, calls);
    }

    [Fact]
    public void AnObservableCallbackThatThrows_LeavesTheOthersAndTheCollectionIntact()
    {
        string name = UniqueMeter();
        using var meter = new Meter(name);
        using var listener = new PerCpuMeterListener([name]);
        Func<long> broken = () => throw new InvalidOperationException("a bug in the app's callback");
        meter.CreateObservableGauge("broken", broken);
        meter.CreateObservableGauge("fine", () => 3L);
        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Equal(3, w.Points[("fine", "")]);
        Assert.DoesNotContain(w.Points.Keys, k => k.Family == "broken");
        Assert.Equal(1, listener.CallbackFailures);
    }

    [Fact]
    public void InstrumentsOfTwoMeterInstancesWithOneDefinition_ShareOneFamily()
    {
        string name = UniqueMeter();
        using var listener = new PerCpuMeterListener([name]);
        using var a = new Meter(name);
        using var b = new Meter(name);
        a.CreateCounter<long>("shared", "{x}").Add(2);
        b.CreateCounter<long>("shared", "{x}").Add(3);
        var w = new CollectingWriter();
        listener.Collect(w);
        Assert.Single(w.Families);
        Assert.Equal(5, w.Points[("shared", "")]);
    }
}
