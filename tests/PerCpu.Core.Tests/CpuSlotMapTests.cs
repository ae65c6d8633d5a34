namespace PerCpu.Tests;

[Trait(Traits.Category, Traits.Core)]
public sealed class CpuSlotMapTests
{
    [Theory]
    [InlineData(new[] { 60, 61, 62, 63 }, 4)]
    [InlineData(new[] { 0, 4, 8, 12 }, 4)]
    [InlineData(new[] { 4095, 1, 2048, 7 }, 4)]
    [InlineData(new[] { 3, 17, 255, 1024, 2000, 4000, 5, 6 }, 8)]
    public void Map_SparseCpuset_GivesDistinctDenseSlots(int[] cpuset, int slots)
    {
        var map = new CpuSlotMap(slots);

        int[] mapped = cpuset.Select(map.Map).ToArray();

        Assert.Equal(cpuset.Length, mapped.Distinct().Count());
        Assert.All(mapped, s => Assert.InRange(s, 0, slots - 1));
        // Stable: the same id maps to the same slot afterwards.
        Assert.Equal(mapped, cpuset.Select(map.Map).ToArray());
    }

    [Fact]
    public void Map_MoreCpusThanSlots_WrapsWithinRange()
    {
        var map = new CpuSlotMap(4);

        int[] mapped = Enumerable.Range(100, 10).Select(map.Map).ToArray();

        Assert.All(mapped, s => Assert.InRange(s, 0, 3));
        Assert.Equal(4, mapped.Take(4).Distinct().Count());
        Assert.Equal(10, map.DistinctIdsSeen);
    }

    [Fact]
    public void Map_AnyInt_NeverLeavesRange()
    {
        var map = new CpuSlotMap(8);
        int[] probes = [-1, -2, int.MinValue, int.MaxValue, 4096, 4097, 1 << 20, 0, 4095];

        foreach (int id in probes.Concat(Enumerable.Range(0, 5000)))
        {
            Assert.InRange(map.Map(id), 0, 7);
        }
    }

    [Fact]
    public void Map_ConcurrentFirstSightings_AssignEachIdOnce()
    {
        var map = new CpuSlotMap(64);
        int[] ids = Enumerable.Range(0, 64).Select(i => 64 + (i * 61)).ToArray();
        int[][] seen = new int[32][];

        Parallel.For(0, 32, new ParallelOptions { MaxDegreeOfParallelism = 32 }, t =>
        {
            seen[t] = ids.Select(map.Map).ToArray();
        });

        Assert.All(seen, s => Assert.Equal(seen[0], s));
        Assert.Equal(64, seen[0].Distinct().Count());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(8192)]
    public void Constructor_BadSlotCount_Throws(int slots) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new CpuSlotMap(slots));

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(3, 4)]
    [InlineData(48, 64)]
    [InlineData(100_000, 4096)]
    public void ComputeSlotCount_RoundsUpToPowerOfTwo(int processors, int expected) =>
        Assert.Equal(expected, ProcessorId.ComputeSlotCount(processors));
}
