using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace PerCpu.Tests;

[Trait(Traits.Category, Traits.Core)]
public sealed class HistogramTests
{
    private const int Threads = 16;
    private const int RecordsPerThread = 200_000;

    [Fact]
    public void Record_BadInput_CountedNeverThrownNeverLost()
    {
        var h = new PerCpuHistogram();

        h.Record(double.NaN);
        h.Record(double.PositiveInfinity);
        h.Record(double.NegativeInfinity);
        h.Record(-1);
        h.Record(-double.Epsilon);
        h.Record(0);
        h.Record(-0.0);
        h.Record(double.Epsilon);
        h.Record(1e300);
        h.Record(0.02);
        h.RecordTicks(-5);

        HistogramSnapshot s = h.Snapshot();
        Assert.Equal(6, s.Invalid);
        Assert.Equal(2, s.ZeroCount);
        Assert.Equal(1, s.Underflow);
        Assert.Equal(1, s.Overflow);
        Assert.Equal(5, s.Count);
        Assert.Equal(1e300 + 0.02 + double.Epsilon, s.Sum);
        Assert.Equal(-0.0, s.Min);
        Assert.Equal(1e300, s.Max);
        Assert.Equal(1, s.ExponentialCounts.Sum());
    }

    [Fact]
    public void ExplicitBoundaries_ValuesAtAndAroundEachBoundary_LandExactly()
    {
        var h = new PerCpuHistogram();
        var values = new List<double>();
        foreach (double b in HistogramLayout.AspNetCoreRequestDurationBoundaries)
        {
            values.AddRange([b, Math.BitDecrement(b), Math.BitIncrement(b), b * 0.97, b * 1.03]);
        }

        var rng = new Random(1);
        values.AddRange(Enumerable.Range(0, 10_000).Select(_ => Math.Exp(rng.NextDouble() * 10) * 1e-4));
        foreach (double v in values)
        {
            h.Record(v);
        }

        HistogramSnapshot s = h.Snapshot();
        long[] direct = new long[s.ExplicitBoundaries.Count];
        long count = h.ReadExplicitBuckets(direct, out _, out _);
        for (int i = 0; i < s.ExplicitBoundaries.Count; i++)
        {
            double b = s.ExplicitBoundaries[i];
            Assert.Equal(values.Count(v => v <= b), s.CumulativeCounts[i]);
            Assert.Equal(s.CumulativeCounts[i], direct[i]);
        }

        Assert.Equal(s.Count, count);

        Assert.Equal(values.Count, s.Count);
    }

    [Fact]
    public void ExplicitBoundaries_SeveralInOneBucketAndPowersOfTwo_Exact()
    {
        // 1.01 and 1.02 share a scale-3 bucket; 0.5 and 2 are bucket edges (no split).
        var layout = new HistogramLayout(3, -10, 10, [0.5, 1.01, 1.02, 2]);
        var h = new PerCpuHistogram(layout);
        double[] values = [0.5, Math.BitIncrement(0.5), 1.0, 1.005, 1.01, Math.BitIncrement(1.01), 1.015, 1.02, 1.03, 2, Math.BitIncrement(2.0), 3];
        foreach (double v in values)
        {
            h.Record(v);
        }

        HistogramSnapshot s = h.Snapshot();
        long[] expected = layout.ExplicitBoundaries.Select(b => (long)values.Count(v => v <= b)).ToArray();
        Assert.Equal(expected, s.CumulativeCounts);
        Assert.Equal(values.Length, s.ExponentialCounts.Sum());

        long[] direct = new long[layout.ExplicitBoundaries.Count];
        Assert.Equal(values.Length, h.ReadExplicitBuckets(direct, out double sum, out long invalid));
        Assert.Equal(expected, direct);
        Assert.Equal(s.Sum, sum);
        Assert.Equal(0, invalid);
    }

    public static TheoryData<string> Distributions => new() { "uniform", "lognormal", "bimodal", "constant", "pareto" };

    [Theory]
    [MemberData(nameof(Distributions))]
    public void GetQuantile_AgainstSortedData_WithinStatedRelativeError(string distribution)
    {
        var layout = new HistogramLayout(3, -30, 30);
        var h = new PerCpuHistogram(layout);
        var rng = new Random(distribution.Length);
        double[] data = Enumerable.Range(0, 100_000).Select(_ => Sample(distribution, rng)).ToArray();
        foreach (double v in data)
        {
            h.Record(v);
        }

        Array.Sort(data);
        HistogramSnapshot s = h.Snapshot();
        foreach (double q in new[] { 0, 0.5, 0.9, 0.99, 0.999, 1 })
        {
            double exact = data[Math.Max(0, (int)Math.Ceiling(q * data.Length) - 1)];
            double estimate = s.GetQuantile(q);
            double error = Math.Abs(estimate - exact) / exact;
            Assert.True(error <= layout.RelativeError * (1 + 1e-9), $"{distribution} q={q}: exact {exact}, estimate {estimate}, error {error:P3} > {layout.RelativeError:P3}");
        }

        Assert.Equal(data[0], s.GetQuantile(0));
        Assert.Equal(data[^1], s.GetQuantile(1));
    }

    private static double Sample(string distribution, Random rng) => distribution switch
    {
        "uniform" => 0.001 + (rng.NextDouble() * 0.999),
        "lognormal" => 0.002 * Math.Exp(1.5 * Gaussian(rng)),
        "bimodal" => rng.NextDouble() < 0.8 ? 0.001 * (1 + (0.1 * Gaussian(rng) * 0.1)) : 0.2 * (1 + (0.05 * Gaussian(rng))),
        "constant" => 0.0421,
        _ => 0.001 / Math.Pow(1 - rng.NextDouble(), 1 / 1.2), // Pareto, alpha 1.2
    };

    private static double Gaussian(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    [Fact]
    public void GetQuantile_EmptyAndBadArgument()
    {
        HistogramSnapshot s = new PerCpuHistogram().Snapshot();
        Assert.True(double.IsNaN(s.GetQuantile(0.5)));
        Assert.True(double.IsNaN(s.Min));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.GetQuantile(1.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.GetQuantile(double.NaN));
    }

    private static void RecordAll(PerCpuHistogram h, int thread)
    {
        for (int i = 0; i < RecordsPerThread; i++)
        {
            h.Record(Value(thread, i));
        }
    }

    /// <summary>Dyadic values (k / 2^20, in (0, 1]): every partial sum is exact, so sums must match bit for bit.</summary>
    private static double Value(int thread, int i) => ((((thread * 7919L) + (i * 104_729L)) % 1_048_576) + 1) / 1_048_576.0;

    [Fact]
    public void Record_ManyThreadsWithConcurrentSnapshots_QuiescentSnapshotEqualsSingleThreadedReference()
    {
        var h = new PerCpuHistogram();
        long[] previous = new long[HistogramLayout.Default.ExponentialBucketCount];
        int snapshots = Stress.WritersWhileReading(Threads, t => RecordAll(h, t), () =>
        {
            HistogramSnapshot s = h.Snapshot();
            Assert.Equal(s.ZeroCount + s.Underflow + s.Overflow + s.ExponentialCounts.Sum(), s.Count);
            for (int i = 0; i < previous.Length; i++)
            {
                Assert.True(s.ExponentialCounts[i] >= previous[i], "bucket counts never decrease between snapshots");
                previous[i] = s.ExponentialCounts[i];
            }
        });

        var reference = new PerCpuHistogram();
        for (int t = 0; t < Threads; t++)
        {
            RecordAll(reference, t); // one thread, the same values
        }

        AssertSame(reference.Snapshot(), h.Snapshot());
        Assert.True(snapshots > 0);
    }

    [Fact]
    public void CollectDelta_ConcurrentWithWriters_DeltasAddUpToTheTotal()
    {
        var h = new PerCpuHistogram();
        HistogramSnapshot? merged = null;
        double deltaMin = double.PositiveInfinity, deltaMax = double.NegativeInfinity;
        Stress.WritersWhileReading(Threads, t => RecordAll(h, t), () =>
        {
            HistogramSnapshot d = h.CollectDelta();
            Assert.True(d.IsDelta);
            merged = merged is null ? d : merged.Merge(d);
            if (d.Count > 0)
            {
                deltaMin = Math.Min(deltaMin, d.Min);
                deltaMax = Math.Max(deltaMax, d.Max);
            }
        });

        HistogramSnapshot last = h.CollectDelta();
        merged = merged is null ? last : merged.Merge(last);
        HistogramSnapshot total = h.Snapshot();

        Assert.Equal((long)Threads * RecordsPerThread, merged.Count);
        Assert.Equal(total.ExponentialCounts, merged.ExponentialCounts);
        Assert.Equal(total.CumulativeCounts, merged.CumulativeCounts);
        Assert.Equal(total.Sum, merged.Sum);
        Assert.Equal(0, total.Invalid);
        // A delta that raced a record's extremes reports its buckets' edges instead (never inverted or infinite): the
        // deltas' extremes bound the true ones, within one bucket.
        deltaMin = Math.Min(deltaMin, last.Count > 0 ? last.Min : double.PositiveInfinity);
        deltaMax = Math.Max(deltaMax, last.Count > 0 ? last.Max : double.NegativeInfinity);
        // (The underflow bucket's lower edge is 0; the overflow bucket has no upper edge, so its lower one stands in.)
        double bucket = Math.Pow(2, 1.0 / (1 << total.Scale));
        double lowest = Math.ScaleB(1, total.MinExponent), highest = Math.ScaleB(1, total.MaxExponent);
        Assert.InRange(deltaMin, total.Min <= lowest ? 0 : total.Min / bucket, total.Min);
        if (total.Max > highest)
        {
            Assert.InRange(deltaMax, highest, total.Max);
        }
        else
        {
            Assert.InRange(deltaMax, total.Max, total.Max * bucket);
        }
        Assert.Equal(0, h.CollectDelta().Count);
    }

    [Fact]
    public void TickSum_BeyondTwoToThe63_StaysExact_UnderManyMoreThreadsThanCores()
    {
        var h = new PerCpuHistogram();
        // 16 threads of long-lived requests: each interval is 2^47 + i ticks (39 hours at 1 GHz), so the shards carry
        // thousands of times; plus four intervals of long.MaxValue, which alone sum past 2^64.
        const int Threads = 16, PerThread = 20_000;
        Stress.WritersWhileReading(Threads, t =>
        {
            for (int i = 0; i < PerThread; i++)
            {
                h.RecordTicks((1L << 47) + i);
            }

            if (t < 4)
            {
                h.RecordTicks(long.MaxValue);
            }
        }, () => _ = h.Snapshot());

        Int128 expected = (Int128)Threads * (((Int128)PerThread << 47) + ((Int128)PerThread * (PerThread - 1) / 2)) + (4 * (Int128)long.MaxValue);
        Assert.True(expected > (Int128)long.MaxValue * 8, "the test must pass 2^63 several times over");
        Assert.Equal(expected, PerCpuHistogram.TickSum(h.ReadCells(vectorized: false)));
        double seconds = (double)expected / Stopwatch.Frequency;
        Assert.Equal(seconds, h.Snapshot().Sum, seconds * 1e-12);
        Assert.Equal(((long)Threads * PerThread) + 4, h.Snapshot().Count);
    }

    [Fact]
    public void CountsWithoutTheirExtremes_ReportBucketEdges_QuantilesNeverThrow()
    {
        var h = new PerCpuHistogram();
        h.Record(0.003);
        h.Record(0.2);
        long[] cells = h.ReadCells(vectorized: false);
        // What a read racing the first record (or the reset of a delta's extremes) can see: counts, no extremes.
        HistogramSnapshot s = HistogramSnapshot.FromCells(h.Layout, cells, (double.PositiveInfinity, double.NegativeInfinity), delta: true);
        Assert.Equal(2, s.Count);
        Assert.True(s.Min <= 0.003 && s.Min > 0.003 / 1.1, $"min {s.Min}");
        Assert.True(s.Max >= 0.2 && s.Max < 0.2 * 1.1, $"max {s.Max}");
        Assert.InRange(s.GetQuantile(0.5), s.Min, s.Max);
        Assert.InRange(s.GetQuantile(0.99), s.Min, s.Max);
        // Extremes known but inverted: replaced too.
        HistogramSnapshot inverted = HistogramSnapshot.FromCells(h.Layout, cells, (0.5, 0.001), delta: true);
        Assert.True(inverted.Min <= inverted.Max);
        _ = inverted.GetQuantile(0.5);
        // Exact extremes are kept.
        HistogramSnapshot exact = HistogramSnapshot.FromCells(h.Layout, cells, (0.003, 0.2), delta: false);
        Assert.Equal(0.003, exact.Min);
        Assert.Equal(0.2, exact.Max);
    }

    [Fact]
    public void OneWriter_TightDeltaCollector_NoDeltaHasInvertedExtremes()
    {
        var h = new PerCpuHistogram();
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(1.5));
        var writer = new Thread(() =>
        {
            var rng = new Random(7);
            while (!stop.IsCancellationRequested)
            {
                h.Record(0.001 + (rng.NextDouble() * 0.1));
            }
        });
        writer.Start();
        long deltas = 0, withCounts = 0;
        while (writer.IsAlive)
        {
            HistogramSnapshot d = h.CollectDelta();
            deltas++;
            if (d.Count > 0)
            {
                withCounts++;
                Assert.True(double.IsFinite(d.Min) && double.IsFinite(d.Max) && d.Min <= d.Max, $"delta {deltas}: count {d.Count}, min {d.Min}, max {d.Max}");
                Assert.InRange(d.GetQuantile(0.99), d.Min, d.Max);
            }
        }

        Assert.True(withCounts > 100, $"{withCounts} of {deltas} deltas held records");
    }

    [Fact]
    public void RecordTicks_SumKeptInIntegerTicks_Exact()
    {
        var h = new PerCpuHistogram();
        long ticks = 0;
        Parallel.For(0, 64, new ParallelOptions { MaxDegreeOfParallelism = 32 }, t =>
        {
            for (int i = 1; i <= 10_000; i++)
            {
                h.RecordTicks(i * 97L);
            }
        });
        for (int i = 1; i <= 10_000; i++)
        {
            ticks += 64 * i * 97L;
        }

        HistogramSnapshot s = h.Snapshot();
        Assert.Equal(640_000, s.Count);
        Assert.Equal(ticks / (double)Stopwatch.Frequency, s.Sum, 9);
        // Documented: a tick count becomes seconds by one multiply with 1 / Frequency (no division on the hot path).
        Assert.Equal(97 * (1.0 / Stopwatch.Frequency), s.Min);
        Assert.Equal(970_000 * (1.0 / Stopwatch.Frequency), s.Max);
    }

    [Fact]
    public void Merge_DifferentScales_EqualsRecordingAtTheCoarserScale()
    {
        var fine = new PerCpuHistogram(new HistogramLayout(4, -17, 8, HistogramLayout.AspNetCoreRequestDurationBoundaries));
        var coarse = new PerCpuHistogram(new HistogramLayout(2, -17, 8, HistogramLayout.AspNetCoreRequestDurationBoundaries));
        var all = new PerCpuHistogram(new HistogramLayout(2, -17, 8, HistogramLayout.AspNetCoreRequestDurationBoundaries));
        for (int i = 0; i < 50_000; i++)
        {
            double v = Value(i % 7, i);
            (i % 2 == 0 ? fine : coarse).Record(v);
            all.Record(v);
        }

        HistogramSnapshot merged = fine.Snapshot().Merge(coarse.Snapshot());

        Assert.Equal(2, merged.Scale);
        AssertSame(all.Snapshot(), merged);
        Assert.Throws<ArgumentException>(() => fine.Snapshot().Merge(new PerCpuHistogram(new HistogramLayout(3, -10, 8)).Snapshot()));
    }

    [Fact]
    public void Record_SteadyState_AllocatesNothing()
    {
        var h = new PerCpuHistogram();
        Loop(h, 10_000);
        long before = GC.GetAllocatedBytesForCurrentThread();
        Loop(h, 200_000);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        // A shard may appear if this thread migrates to a CPU it has not recorded from yet.
        Assert.True(allocated <= HistogramLayout.Default.BytesPerShard * ProcessorId.SlotCount, $"{allocated} B");

        [MethodImpl(MethodImplOptions.NoInlining)]
        static void Loop(PerCpuHistogram h, int n)
        {
            for (int i = 0; i < n; i++)
            {
                h.Record(0.0001 * ((i % 1000) + 1));
                h.RecordTicks(i);
            }
        }
    }

    [Fact]
    public void ReadCells_VectorizedEqualsScalar()
    {
        var h = new PerCpuHistogram();
        Parallel.For(0, 100_000, i => h.Record(Value(i % 5, i)));

        Assert.Equal(h.ReadCells(vectorized: false), h.ReadCells(vectorized: true));
    }

    /// <summary>Every count, bucket and statistic of two snapshots equal (also used by the rseq write tests).</summary>
    internal static void AssertSame(HistogramSnapshot expected, HistogramSnapshot actual)
    {
        Assert.Equal(expected.Count, actual.Count);
        Assert.Equal(expected.Sum, actual.Sum);
        Assert.Equal(expected.Min, actual.Min);
        Assert.Equal(expected.Max, actual.Max);
        Assert.Equal(expected.Invalid, actual.Invalid);
        Assert.Equal(expected.ZeroCount, actual.ZeroCount);
        Assert.Equal(expected.Underflow, actual.Underflow);
        Assert.Equal(expected.Overflow, actual.Overflow);
        Assert.Equal(expected.ExponentialCounts, actual.ExponentialCounts);
        Assert.Equal(expected.CumulativeCounts, actual.CumulativeCounts);
    }
}
