using System.Runtime.CompilerServices;
using PerCpu.Internal;

namespace PerCpu.Tests;

[Trait(Traits.Category, Traits.Core)]
public sealed class CounterTests
{
    // Many more threads than cores: the id is stale after migrations, CPUs are shared, and the reader runs throughout.
    private const int Threads = 16;
    private const int AddsPerThread = 1_000_000;

    [Fact]
    public void Counter_AddedPastLongMaxValue_SaturatesInsteadOfWrapping()
    {
        var c = new PerCpuCounter();
        c.Add(long.MaxValue);
        Assert.Equal(long.MaxValue, c.Collect());
        c.Add(long.MaxValue); // an Interlocked.Add total would read -2
        Assert.Equal(long.MaxValue, c.Sum());
        c.Increment();
        Assert.Equal(long.MaxValue, c.Sum());
        Assert.Equal(0, c.Collect());

        // Many more threads than cores adding 1.5 x long.MaxValue in all (below 2^64, so even if one CPU slot took it
        // all its cell stays exact): reads never go down, and the total saturates.
        var many = new PerCpuCounter();
        long previous = 0;
        Stress.WritersWhileReading(16, t =>
        {
            for (int i = 0; i < 1000; i++)
            {
                many.Add(long.MaxValue / 16_000 * 3 / 2);
            }
        }, () =>
        {
            long now = many.Sum();
            Assert.True(now >= previous, $"a read went from {previous} down to {now}");
            previous = now;
        });
        Assert.Equal(long.MaxValue, many.Sum());
    }

    [Fact]
    public void Counter_ManyThreadsWithConcurrentReader_ReadsMonotonicBoundedAndFinalExact() =>
        AssertCounterExact(new PerCpuCounter());

    [Fact]
    public void UpDownCounter_MixedSigns_FinalExactAndReadsBounded()
    {
        var counter = new PerCpuUpDownCounter();
        long expected = Threads * 2L * (AddsPerThread / 4);
        long min = long.MaxValue, max = long.MinValue;
        Stress.WritersWhileReading(Threads, id =>
        {
            for (int i = 0; i < AddsPerThread / 4; i++)
            {
                // Per thread: +3, -1, +id, -id ... nets 2 per iteration; threads interleave signs.
                counter.Add(3);
                counter.Decrement();
                counter.Add(id);
                counter.Add(-id);
            }
        }, () =>
        {
            long v = counter.Sum();
            min = Math.Min(min, v);
            max = Math.Max(max, v);
        });

        Assert.Equal(expected, counter.Sum());
        // In-flight bound: every thread can have at most one pending write whose sign the reader sees out of order.
        long slack = Threads * (3L + Threads);
        Assert.InRange(min, -slack, expected + slack);
        Assert.InRange(max, -slack, expected + slack);
    }

    [Fact]
    public void Counter_CollectWhileWriting_DeltasPlusRemainderEqualTotal()
    {
        var counter = new PerCpuCounter();
        long collected = 0;
        int collects = Stress.WritersWhileReading(Threads, _ =>
        {
            for (int i = 0; i < AddsPerThread / 2; i++)
            {
                counter.Add(2);
            }
        }, () =>
        {
            long delta = counter.Collect();
            Assert.True(delta >= 0, "a delta of a monotonic counter is never negative");
            collected += delta;
        });

        long remainder = counter.Collect();
        Assert.Equal((long)Threads * AddsPerThread, collected + remainder);
        Assert.Equal(0, counter.Collect());
        Assert.True(collects > 1);
    }

    [Fact]
    public void Counter_NegativeAdd_Throws()
    {
        var counter = new PerCpuCounter();
        ArgumentOutOfRangeException ex = Assert.Throws<ArgumentOutOfRangeException>(() => counter.Add(-1));
        Assert.Equal("value", ex.ParamName);
        counter.Add(0);
        Assert.Equal(0, counter.Sum());
    }

    [Fact]
    public void Counter_SingleThread_AllocatesNothingPerAdd()
    {
        var counter = new PerCpuCounter();
        counter.Increment(); // allocates this CPU's cell
        for (int warm = 0; warm < 3; warm++)
        {
            Loop(counter, 10_000);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        Loop(counter, 100_000);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        // A new cell (144 B) can appear if this thread migrates to a CPU it has not written from yet.
        Assert.True(allocated <= 144 * ProcessorId.SlotCount, $"{allocated} bytes allocated for 100k adds");
        Assert.Equal(1 + (3 * 10_000) + 100_000, counter.Sum());

        [MethodImpl(MethodImplOptions.NoInlining)]
        static void Loop(PerCpuCounter c, int n)
        {
            for (int i = 0; i < n; i++)
            {
                c.Add(1);
            }
        }
    }

    [Fact]
    public void Counter_ShardsAreLazy()
    {
        var counter = new PerCpuCounter();
        Assert.Equal(0, counter.ShardCount);
        counter.Increment();
        Assert.InRange(counter.ShardCount, 1, ProcessorId.SlotCount);
    }

    [Fact]
    public void PaddedCell_ValueIsHalfALineFromEitherEnd()
    {
        var cell = new PaddedInt64();

        long fromHead = Unsafe.ByteOffset(ref cell.Head, ref cell.Value);
        long toTail = Unsafe.ByteOffset(ref cell.Value, ref cell.Tail);

        // Object header + method table (16 B) + 56 B before; 64 B after: any two cells' values are >= 144 B apart.
        Assert.Equal((CacheLine.Size / 2) - sizeof(long), fromHead);
        Assert.Equal(CacheLine.Size / 2, toTail);
        Assert.True(16 + fromHead + sizeof(long) + toTail + sizeof(long) > CacheLine.Size);
    }

    internal static void AssertCounterExact(PerCpuCounter counter)
    {
        long previous = 0;
        int reads = Stress.WritersWhileReading(Threads, _ =>
        {
            for (int i = 0; i < AddsPerThread; i++)
            {
                counter.Increment();
            }
        }, () =>
        {
            long v = counter.Sum();
            Assert.True(v >= previous, $"read {v} after {previous}: reads must never decrease");
            Assert.True(v <= (long)Threads * AddsPerThread);
            previous = v;
        });

        Assert.Equal((long)Threads * AddsPerThread, counter.Sum());
        Assert.True(reads > 0);
    }
}

[Collection(GlobalStrategyCollection.Name)]
public sealed class CounterPerStrategyTests
{
    [Theory]
    [MemberData(nameof(ProcessorIdTests.AllStrategies), MemberType = typeof(ProcessorIdTests))]
    public void Counter_UnderEachStrategy_Exact(ProcessorIdStrategy strategy)
    {
        ProcessorIdTests.SkipUnlessAvailable(strategy);
        try
        {
            Assert.True(ProcessorId.TrySetStrategy(strategy, out string? reason), reason);
            CounterTests.AssertCounterExact(new PerCpuCounter());
        }
        finally
        {
            ProcessorId.TrySetStrategy(ProcessorIdStrategy.Auto, out _);
        }
    }
}
