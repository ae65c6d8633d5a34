using System.Numerics;
using PerCpu.Internal;

namespace PerCpu.Tests;

[Trait(Traits.Category, Traits.Core)]
public sealed class HistogramIndexTests
{
    /// <summary>
    /// The specification's index, exactly: the largest i with base^i &lt; v, i.e. 2^i &lt; v^(2^scale). With v = M × 2^E
    /// (M the 53-bit integer mantissa), log2(v^n) = log2(M^n) + E·n, and ceil(log2 P) of an integer P is its bit length,
    /// minus one when P is a power of two.
    /// </summary>
    internal static int OracleIndex(double v, int scale)
    {
        long bits = BitConverter.DoubleToInt64Bits(v);
        int biased = (int)(bits >> 52);
        BigInteger mantissa = (bits & 0xF_FFFF_FFFF_FFFF) | (1L << 52);
        int e = biased - 1075;
        int n = 1 << scale;
        BigInteger p = BigInteger.Pow(mantissa, n);
        long bitLength = (long)p.GetBitLength();
        long ceilLog2 = p.IsPowerOfTwo ? bitLength - 1 : bitLength;
        return (int)(ceilLog2 + ((long)e * n) - 1);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(8)]
    public void MapToIndex_RandomValues_MatchesExactOracle(int scale)
    {
        var layout = new HistogramLayout(scale, -40, 40);
        var rng = new Random(scale * 7919);
        int count = scale == 8 ? 2_000 : 20_000;
        for (int i = 0; i < count; i++)
        {
            double v = Math.ScaleB(1 + rng.NextDouble(), rng.Next(-60, 60));
            Assert.Equal(OracleIndex(v, scale), layout.MapToIndex(v));
        }
    }

    [Theory]
    [InlineData(3, -30, 39)]
    [InlineData(4, -10, 10)]
    [InlineData(1, -100, 100)]
    public void MapToIndex_EveryBoundaryPlusMinus4Ulp_MatchesExactOracle(int scale, int fromOctave, int toOctave)
    {
        var layout = new HistogramLayout(scale, -40, 40);
        int n = 1 << scale, checkedValues = 0;
        for (int octave = fromOctave; octave <= toOctave; octave++)
        {
            for (int k = 0; k < n; k++)
            {
                double near = Math.ScaleB(Math.Pow(2, (double)k / n), octave);
                double v = near;
                for (int step = 0; step < 4; step++)
                {
                    v = Math.BitDecrement(v);
                }

                for (int step = -4; step <= 4; step++, v = Math.BitIncrement(v))
                {
                    Assert.Equal(OracleIndex(v, scale), layout.MapToIndex(v));
                    checkedValues++;
                }
            }
        }

        Assert.Equal((toOctave - fromOctave + 1) * n * 9, checkedValues);
    }

    [Fact]
    public void MapToIndex_PowersOfTwo_AreUpperInclusive()
    {
        var layout = new HistogramLayout(3, -40, 40);
        Assert.Equal(-1, layout.MapToIndex(1.0));          // (base^-1, 1]
        Assert.Equal(0, layout.MapToIndex(Math.BitIncrement(1.0)));
        Assert.Equal(7, layout.MapToIndex(2.0));
        Assert.Equal(-81, layout.MapToIndex(Math.ScaleB(1, -10)));
    }

    [Fact]
    public void Layout_Default_FitsTwoKiBPerShard()
    {
        HistogramLayout layout = HistogramLayout.Default;
        Assert.Equal(200, layout.ExponentialBucketCount);
        Assert.Equal(2048, layout.BytesPerShard);
        Assert.Equal(0.0433, layout.RelativeError, 4);

        new PerCpuHistogram().Record(0.01); // the process's first record sets up the write path (stubs, self-test): not per shard
        var h = new PerCpuHistogram();
        long before = GC.GetAllocatedBytesForCurrentThread();
        h.Record(0.01);
        long firstRecord = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.InRange(firstRecord, 1, layout.BytesPerShard + 64);
    }

    [Theory]
    [InlineData(-1, -17, 8)]
    [InlineData(9, -17, 8)]
    [InlineData(3, 8, 8)]
    [InlineData(3, -2000, 8)]
    public void Layout_BadArguments_Throw(int scale, int min, int max) =>
        Assert.ThrowsAny<ArgumentException>(() => new HistogramLayout(scale, min, max));

    [Fact]
    public void Layout_BoundariesNotIncreasingOrOutOfRange_ThrowWithTheFix()
    {
        ArgumentException e1 = Assert.ThrowsAny<ArgumentException>(() => new HistogramLayout(3, -17, 8, [0.1, 0.05]));
        Assert.Contains("strictly increasing", e1.Message, StringComparison.Ordinal);
        ArgumentException e2 = Assert.ThrowsAny<ArgumentException>(() => new HistogramLayout(3, -17, 8, [1000]));
        Assert.Contains("widen", e2.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ShardMath_VectorizedAdd_EqualsScalarOracle()
    {
        var rng = new Random(42);
        for (int length = 0; length < 300; length += 7)
        {
            long[] src = Enumerable.Range(0, length).Select(_ => rng.NextInt64(-1_000_000, 1_000_000)).ToArray();
            long[] acc1 = Enumerable.Range(0, length).Select(_ => rng.NextInt64()).ToArray();
            long[] acc2 = (long[])acc1.Clone();

            ShardMath.AddInto(acc1, src);
            ShardMath.AddIntoScalar(acc2, src);

            Assert.Equal(acc2, acc1);
        }
    }
}
