using System.Collections.ObjectModel;
using PerCpu.Internal;

namespace PerCpu;

/// <summary>
/// An immutable, merged view of a <see cref="PerCpuHistogram"/>: counts, sum, extremes, exponential buckets, cumulative
/// counts at the explicit boundaries, and quantile estimates. Snapshots with the same range and boundaries merge, across
/// histograms and processes; differing scales are reconciled by downscaling the finer one (exact: bucket <c>i</c> at
/// scale <c>s</c> lies inside bucket <c>i &gt;&gt; d</c> at scale <c>s − d</c>).
/// </summary>
/// <remarks>
/// A snapshot taken while writers run is not an atomic cut: each bucket count is a value that existed during the read,
/// <see cref="Count"/> is the sum of those buckets (so count and buckets always agree), and <see cref="Sum"/>,
/// <see cref="Min"/> and <see cref="Max"/> may include a few records whose bucket increment the read did not see. Taken
/// at quiescence, it is exact. Once taken it never changes.
/// </remarks>
public sealed class HistogramSnapshot
{
    private readonly long[] _exponential;
    private readonly long[] _cumulative;
    private HistogramExemplar[] _exemplars = [];

    private HistogramSnapshot(int scale, int minExponent, int maxExponent, double[] boundaries, long[] exponential, long[] cumulative, long zero, long underflow, long overflow, long invalid, double sum, double min, double max, bool isDelta)
    {
        Scale = scale;
        MinExponent = minExponent;
        MaxExponent = maxExponent;
        Boundaries = boundaries;
        ExplicitBoundaries = Array.AsReadOnly(boundaries);
        _exponential = exponential;
        _cumulative = cumulative;
        ExponentialCounts = Array.AsReadOnly(exponential);
        CumulativeCounts = Array.AsReadOnly(cumulative);
        ZeroCount = zero;
        Underflow = underflow;
        Overflow = overflow;
        Invalid = invalid;
        Sum = sum;
        IsDelta = isDelta;
        long count = zero + underflow + overflow;
        foreach (long c in exponential)
        {
            count += c;
        }

        Count = count;
        if (count == 0)
        {
            Min = Max = double.NaN;
            return;
        }

        // A read that races the first records (or a delta whose extremes were reset after its bucket cells were read)
        // can see counts without the extremes that go with them: never report them inverted or infinite; fall back to
        // the edges of the lowest and highest non-empty buckets, which hold the true extremes.
        bool minKnown = double.IsFinite(min), maxKnown = double.IsFinite(max);
        if (!minKnown || !maxKnown || min > max)
        {
            (double low, double high) = BucketEdges();
            min = minKnown && min >= low && min <= high ? min : low;
            max = maxKnown && max >= min && max <= high ? max : high;
        }

        Min = min;
        Max = max;
    }

    /// <summary>The lower edge of the lowest non-empty bucket and the upper edge of the highest (2^MaxExponent for overflow).</summary>
    private (double Low, double High) BucketEdges()
    {
        double Lower(int i) => Math.Pow(2, MinExponent + (i / (double)(1 << Scale)));
        double low = ZeroCount > 0 || Underflow > 0 ? 0 : double.NaN;
        double high = Overflow > 0 ? Math.ScaleB(1, MaxExponent) : double.NaN;
        for (int i = 0; i < _exponential.Length && double.IsNaN(low); i++)
        {
            if (_exponential[i] != 0)
            {
                low = Lower(i);
            }
        }

        for (int i = _exponential.Length - 1; i >= 0 && double.IsNaN(high); i--)
        {
            if (_exponential[i] != 0)
            {
                high = Lower(i + 1);
            }
        }

        if (double.IsNaN(high))
        {
            high = Underflow > 0 ? Math.ScaleB(1, MinExponent) : 0;
        }

        return (double.IsNaN(low) ? Math.ScaleB(1, MaxExponent) : low, high);
    }

    /// <summary>
    /// The exemplars read with the counts, at most one per classic bucket (the latest), in bucket order; for a delta,
    /// those recorded since the previous collect. Empty when no record ran under a sampled activity.
    /// </summary>
    public IReadOnlyList<HistogramExemplar> Exemplars => _exemplars;

    internal HistogramSnapshot WithExemplars(HistogramExemplar[] exemplars)
    {
        _exemplars = exemplars;
        return this;
    }

    /// <summary>Buckets per power of two: 2^Scale.</summary>
    public int Scale { get; }

    /// <summary>Lower edge of the exponential range, 2^MinExponent.</summary>
    public int MinExponent { get; }

    /// <summary>Upper edge of the exponential range, 2^MaxExponent.</summary>
    public int MaxExponent { get; }

    /// <summary>Whether this holds the records since the previous collect rather than since creation.</summary>
    public bool IsDelta { get; }

    /// <summary>Valid values recorded: the sum of every bucket (zero, underflow, exponential, overflow), so it always agrees with them.</summary>
    public long Count { get; }

    /// <summary>Sum of the valid values.</summary>
    public double Sum { get; }

    /// <summary>Smallest valid value, or NaN when <see cref="Count"/> is 0.</summary>
    public double Min { get; }

    /// <summary>Largest valid value, or NaN when <see cref="Count"/> is 0.</summary>
    public double Max { get; }

    /// <summary>NaN, infinite and negative values, counted and otherwise ignored.</summary>
    public long Invalid { get; }

    /// <summary>Values equal to zero.</summary>
    public long ZeroCount { get; }

    /// <summary>Positive values at or below 2^MinExponent.</summary>
    public long Underflow { get; }

    /// <summary>Values above 2^MaxExponent.</summary>
    public long Overflow { get; }

    /// <summary>The OpenTelemetry index of <see cref="ExponentialCounts"/>[0]: <c>MinExponent × 2^Scale</c>.</summary>
    public int Offset => MinExponent << Scale;

    /// <summary>Dense counts of the in-range exponential buckets, starting at index <see cref="Offset"/>.</summary>
    public ReadOnlyCollection<long> ExponentialCounts { get; }

    /// <summary>The explicit (classic) boundaries.</summary>
    public ReadOnlyCollection<double> ExplicitBoundaries { get; }

    /// <summary>For each explicit boundary, the exact number of valid values at or below it (Prometheus <c>le</c>). The
    /// <c>+Inf</c> bucket is <see cref="Count"/>.</summary>
    public ReadOnlyCollection<long> CumulativeCounts { get; }

    internal double[] Boundaries { get; }

    /// <summary>
    /// Estimates the <paramref name="q"/>-quantile: the value of rank <c>max(1, ceil(q × Count))</c> in sorted order.
    /// </summary>
    /// <remarks>
    /// q = 0 returns <see cref="Min"/> and q = 1 returns <see cref="Max"/>, exactly. Otherwise, when the ranked value lies
    /// in an in-range exponential bucket <c>(lo, hi]</c>, the estimate is <c>2·lo·hi / (lo + hi)</c> clamped to
    /// [<see cref="Min"/>, <see cref="Max"/>], whose relative error is at most <c>(base − 1) / (base + 1)</c>
    /// (<see cref="HistogramLayout.RelativeError"/>: 4.33% at scale 3). A rank in the zero bucket returns 0; a rank in the
    /// underflow or overflow bucket returns that bucket's edge clamped to [Min, Max], with no error bound.
    /// </remarks>
    /// <param name="q">The quantile, 0 to 1.</param>
    /// <returns>The estimate, or NaN when <see cref="Count"/> is 0.</returns>
    public double GetQuantile(double q)
    {
        if (!(q >= 0 && q <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(q), q, "The quantile must be between 0 and 1.");
        }

        if (Count == 0)
        {
            return double.NaN;
        }

        if (q == 0)
        {
            return Min;
        }

        if (q == 1)
        {
            return Max;
        }

        long rank = Math.Max(1, (long)Math.Ceiling(q * Count));
        long seen = ZeroCount;
        if (rank <= seen)
        {
            return 0;
        }

        seen += Underflow;
        if (rank <= seen)
        {
            return Math.Clamp(Math.ScaleB(1, MinExponent), Min, Max);
        }

        for (int i = 0; i < _exponential.Length; i++)
        {
            seen += _exponential[i];
            if (rank <= seen)
            {
                double lo = Math.Pow(2, Math.ScaleB(Offset + i, -Scale));
                double hi = Math.Pow(2, Math.ScaleB(Offset + i + 1, -Scale));
                return Math.Clamp(2 * lo * hi / (lo + hi), Min, Max);
            }
        }

        return Max;
    }

    /// <summary>
    /// The positive buckets as an exponential (native, OTLP) histogram carries them: the in-range counts from
    /// <see cref="Offset"/>, then the overflow count in the bucket that holds <see cref="Max"/> (every value above the
    /// range lies in <c>(2^MaxExponent, Max]</c>), so the highest bucket's edge never falls below the largest value and
    /// the sum. Where that bucket lies more than <paramref name="maxBuckets"/> above the offset, a lower scale is used.
    /// </summary>
    /// <param name="maxBuckets">The most buckets the dense counts may span.</param>
    /// <returns>The scale, the index of the first count (bucket i holds <c>(base^i, base^(i+1)]</c>), and the counts.</returns>
    public (int Scale, int Offset, long[] Counts) ExponentialBuckets(int maxBuckets)
    {
        if (Overflow == 0 || !(Max > Math.ScaleB(1, MaxExponent)))
        {
            return (Scale, Offset, Overflow == 0 ? [.. _exponential] : [.. _exponential, Overflow]);
        }

        HistogramSnapshot s = this;
        int top = IndexAt(Max, Scale);
        while (s.Scale > 0 && top - s.Offset >= maxBuckets)
        {
            s = s.Downscale(s.Scale - 1);
            top = IndexAt(Max, s.Scale);
        }

        long[] counts = new long[Math.Max(top - s.Offset + 1, s._exponential.Length)];
        s._exponential.CopyTo(counts, 0);
        counts[top - s.Offset] += Overflow;
        return (s.Scale, s.Offset, counts);
    }

    /// <summary>The index of the bucket <c>(base^i, base^(i+1)]</c> that holds a positive finite value at a scale.</summary>
    internal static int IndexAt(double value, int scale)
    {
        int index = (int)Math.Ceiling(Math.ScaleB(Math.Log2(value), scale)) - 1;
        if (value <= Math.Pow(2, Math.ScaleB(index, -scale)))
        {
            index--; // Log2 rounded up across an edge
        }
        else if (value > Math.Pow(2, Math.ScaleB(index + 1, -scale)))
        {
            index++;
        }

        return index;
    }

    /// <summary>This snapshot at a lower scale (coarser buckets): exact, since buckets nest.</summary>
    /// <param name="scale">A scale between 0 and <see cref="Scale"/>.</param>
    public HistogramSnapshot Downscale(int scale)
    {
        if (scale < 0 || scale > Scale)
        {
            throw new ArgumentOutOfRangeException(nameof(scale), scale, $"Can only downscale to 0..{Scale}.");
        }

        int d = Scale - scale;
        if (d == 0)
        {
            return this;
        }

        long[] coarse = new long[_exponential.Length >> d];
        for (int i = 0; i < _exponential.Length; i++)
        {
            coarse[i >> d] += _exponential[i]; // offset is a multiple of 2^d, so relative indexes nest too
        }

        return new HistogramSnapshot(scale, MinExponent, MaxExponent, Boundaries, coarse, _cumulative, ZeroCount, Underflow, Overflow, Invalid, Sum, Min, Max, IsDelta).WithExemplars(_exemplars);
    }

    /// <summary>
    /// Adds two snapshots (of different histograms, or processes): same exponent range and explicit boundaries required;
    /// the result has the lower of the two scales.
    /// </summary>
    /// <param name="other">The other snapshot.</param>
    public HistogramSnapshot Merge(HistogramSnapshot other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (MinExponent != other.MinExponent || MaxExponent != other.MaxExponent || !Boundaries.AsSpan().SequenceEqual(other.Boundaries))
        {
            throw new ArgumentException("Snapshots merge only with the same exponent range and explicit boundaries.", nameof(other));
        }

        int scale = Math.Min(Scale, other.Scale);
        HistogramSnapshot a = Downscale(scale), b = other.Downscale(scale);
        long[] exp = (long[])a._exponential.Clone();
        ShardMath.AddInto(exp, b._exponential);
        long[] cumulative = (long[])a._cumulative.Clone();
        ShardMath.AddInto(cumulative, b._cumulative);
        return new HistogramSnapshot(scale, MinExponent, MaxExponent, Boundaries, exp, cumulative,
            a.ZeroCount + b.ZeroCount, a.Underflow + b.Underflow, a.Overflow + b.Overflow, a.Invalid + b.Invalid,
            a.Sum + b.Sum, MinOf(a, b), MaxOf(a, b), IsDelta && other.IsDelta).WithExemplars(LatestPerBucket(a._exemplars, b._exemplars));

        static double MinOf(HistogramSnapshot a, HistogramSnapshot b) => a.Count == 0 ? b.Min : b.Count == 0 ? a.Min : Math.Min(a.Min, b.Min);
        static double MaxOf(HistogramSnapshot a, HistogramSnapshot b) => a.Count == 0 ? b.Max : b.Count == 0 ? a.Max : Math.Max(a.Max, b.Max);
    }

    private static HistogramExemplar[] LatestPerBucket(HistogramExemplar[] a, HistogramExemplar[] b) =>
        [.. a.Concat(b).GroupBy(e => e.BucketIndex).Select(g => g.MaxBy(e => e.TimestampUnixNanoseconds)).OrderBy(e => e.BucketIndex)];

    /// <summary>
    /// The exact count at or below each explicit boundary, straight from merged shard cells (no snapshot allocated);
    /// returns the total count. Bucket counts of split buckets are their main cell plus their split cells.
    /// </summary>
    internal static long Cumulative(HistogramLayout layout, ReadOnlySpan<long> cells, Span<long> cumulative)
    {
        int splits = ShardLayout.Splits(layout);
        int[] bucketOf = layout.BoundaryBucket;
        long below = cells[ShardLayout.Zero] + cells[ShardLayout.Underflow];
        int nextBucket = 0; // buckets [0, nextBucket) are in `below` (main cells)
        int nextSplit = 0;  // split cells [0, nextSplit) are in `below`
        for (int b = 0; b < bucketOf.Length; b++)
        {
            int rel = bucketOf[b];
            for (; nextBucket < rel; nextBucket++)
            {
                below += cells[ShardLayout.Buckets + nextBucket];
            }

            for (; nextSplit < bucketOf.Length && bucketOf[nextSplit] < rel; nextSplit++)
            {
                below += cells[splits + nextSplit];
            }

            long inBucket = 0;
            bool split = layout.IsSplit(rel);
            for (int p = nextSplit; p < bucketOf.Length && bucketOf[p] == rel; p++)
            {
                // Split parts up to and including boundary b; for an upper-edge boundary, the whole bucket.
                inBucket += !split || p <= b ? cells[splits + p] : 0;
            }

            cumulative[b] = below + inBucket + (split ? 0 : cells[ShardLayout.Buckets + rel]);
        }

        long count = cells[ShardLayout.Zero] + cells[ShardLayout.Underflow] + cells[ShardLayout.Overflow];
        for (int i = 0; i < layout.BucketCount + bucketOf.Length; i++)
        {
            count += cells[ShardLayout.Buckets + i];
        }

        return count;
    }

    internal static HistogramSnapshot FromCells(HistogramLayout layout, long[] cells, (double Min, double Max) extremes, bool delta)
    {
        int buckets = layout.BucketCount;
        int splits = ShardLayout.Splits(layout);
        long[] exp = cells.AsSpan(ShardLayout.Buckets, buckets).ToArray();
        double[] boundaries = layout.Boundaries;
        for (int b = 0; b < boundaries.Length; b++)
        {
            exp[layout.BoundaryBucket[b]] += cells[splits + b]; // a split bucket's parts add up to the bucket
        }

        long[] cumulative = new long[boundaries.Length];
        Cumulative(layout, cells, cumulative);
        double sum = PerCpuHistogram.SumOf(cells);
        return new HistogramSnapshot(layout.Scale, layout.MinExponent, layout.MaxExponent, boundaries, exp, cumulative,
            cells[ShardLayout.Zero], cells[ShardLayout.Underflow], cells[ShardLayout.Overflow], cells[ShardLayout.Invalid],
            sum, extremes.Min, extremes.Max, delta);
    }
}
