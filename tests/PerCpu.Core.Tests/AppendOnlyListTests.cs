using PerCpu.Families;

namespace PerCpu.Tests;

/// <summary>
/// The lock-free walk behind scrapes: many more writers than cores add items under a lock while readers walk; every
/// walk sees a gap-free prefix in the order added, never a default slot, and at least what was published before it began.
/// </summary>
public sealed class AppendOnlyListTests
{
    [Fact]
    public async Task ReadersDuringManyWriters_SeeEveryPublishedItemInOrder_NeverAHole()
    {
        var list = new AppendOnlyList<object>();
        var gate = new Lock();
        const int Writers = 32, PerWriter = 5_000;
        int next = 0;
        var items = new object[Writers * PerWriter];
        for (int i = 0; i < items.Length; i++)
        {
            items[i] = new object();
        }

        using var stop = new CancellationTokenSource();
        long walks = 0;
        Task[] readers = [.. Enumerable.Range(0, 4).Select(_ => Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                int before = list.Count;
                ReadOnlySpan<object> seen = list.Items;
                Assert.True(seen.Length >= before, $"a walk saw {seen.Length} items after {before} were published");
                for (int i = 0; i < seen.Length; i++)
                {
                    Assert.Same(items[i], seen[i]); // in the order added, no hole
                }

                Interlocked.Increment(ref walks);
            }
        }))];
        // The readers walk before the writers start (the thread pool may start them late), so every run overlaps.
        SpinWait.SpinUntil(() => Interlocked.Read(ref walks) >= readers.Length, TimeSpan.FromSeconds(30));
        Parallel.For(0, Writers, new ParallelOptions { MaxDegreeOfParallelism = Writers }, _ =>
        {
            for (int i = 0; i < PerWriter; i++)
            {
                lock (gate)
                {
                    list.Add(items[next++]);
                }
            }
        });
        stop.Cancel();
        await Task.WhenAll(readers);

        Assert.Equal(items.Length, list.Count);
        ReadOnlySpan<object> all = list.Items;
        for (int i = 0; i < items.Length; i++)
        {
            Assert.Same(items[i], all[i]);
        }

        Assert.True(Interlocked.Read(ref walks) > 0);
    }
}
