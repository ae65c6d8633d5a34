using System.Globalization;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PerCpu;

/// <summary>
/// The bucket layout of a <see cref="PerCpuHistogram"/>: base-2 exponential buckets (the OpenTelemetry
/// exponential-histogram and Prometheus native-histogram family) over a bounded value range, plus explicit
/// boundaries (classic <c>le</c> buckets) that are kept exact by splitting the few exponential buckets that contain one.
/// </summary>
/// <remarks>
/// <para>Exponential bucket <c>i</c> holds values in <c>(base^i, base^(i+1)]</c> with <c>base = 2^(2^-Scale)</c>, exactly as the
/// OpenTelemetry data model defines it, for every double, boundaries included. The index is computed without
/// <c>Math.Log</c>: the IEEE-754 exponent gives the octave and a lookup over the top <c>Scale + 1</c> mantissa bits plus one
/// compare with a precomputed boundary gives the sub-bucket. The boundaries are found once per scale by exact integer
/// arithmetic (<see cref="BigInteger"/>).</para>
/// <para>In-range indexes are <c>[MinExponent × 2^Scale, MaxExponent × 2^Scale)</c>, i.e. values in <c>(2^MinExponent, 2^MaxExponent]</c>.
/// A positive value at or below <c>2^MinExponent</c> is counted in the underflow bucket, one above <c>2^MaxExponent</c> in the
/// overflow bucket, zero in the zero bucket, and NaN, infinities and negative values in the invalid count: nothing is lost.</para>
/// <para>Memory per recording CPU: <c>8 × (2^Scale × (MaxExponent − MinExponent) + ExplicitBoundaries.Count + 11 + 16 + 13) + 16</c>
/// bytes (buckets, split cells, eleven scalar cells, 128 bytes of padding before and 104 after, the array header). At the
/// defaults (scale 3, 2^-17 s to 2^8 s, ASP.NET Core's 14 boundaries): 8 × (200 + 14 + 11 + 29) + 16 = 2048 bytes.</para>
/// </remarks>
public sealed class HistogramLayout : IEquatable<HistogramLayout>
{
    /// <summary>ASP.NET Core's advice for <c>http.server.request.duration</c>, in seconds.</summary>
    public static readonly IReadOnlyList<double> AspNetCoreRequestDurationBoundaries = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

    /// <summary>Smallest supported scale.</summary>
    public const int MinScale = 0;

    /// <summary>Largest supported scale (256 buckets per octave).</summary>
    public const int MaxScale = 8;

    private static readonly ScaleTables?[] s_tables = new ScaleTables?[MaxScale + 1];

    internal readonly ScaleTables Tables;
    internal readonly int LowIndex;
    internal readonly int BucketCount;
    internal readonly ulong[] SplitMap; // bit (index - LowIndex) set when an explicit boundary lies inside that bucket
    internal readonly double[] Boundaries;
    internal readonly int[] BoundaryBucket; // relative bucket of each explicit boundary

    /// <summary>Creates a layout.</summary>
    /// <param name="scale">Resolution: <c>2^scale</c> buckets per power of two, 0 to 8. Scale 3 bounds the relative error of a
    /// quantile at 4.33%.</param>
    /// <param name="minExponent">Values at or below <c>2^minExponent</c> go to the underflow bucket.</param>
    /// <param name="maxExponent">Values above <c>2^maxExponent</c> go to the overflow bucket.</param>
    /// <param name="explicitBoundaries">Strictly increasing classic bucket boundaries, each in <c>(2^minExponent, 2^maxExponent]</c>;
    /// null for none.</param>
    public HistogramLayout(int scale = 3, int minExponent = -17, int maxExponent = 8, IEnumerable<double>? explicitBoundaries = null)
    {
        if (scale is < MinScale or > MaxScale)
        {
            throw new ArgumentOutOfRangeException(nameof(scale), scale, $"The scale must be between {MinScale} and {MaxScale} (2^scale buckets per power of two).");
        }

        if (minExponent < -1000 || maxExponent > 1000 || minExponent >= maxExponent)
        {
            throw new ArgumentOutOfRangeException(nameof(minExponent), $"The exponent range [{minExponent}, {maxExponent}) must satisfy -1000 <= min < max <= 1000.");
        }

        long buckets = (long)(maxExponent - minExponent) << scale;
        if (buckets > 65_536)
        {
            throw new ArgumentOutOfRangeException(nameof(maxExponent), $"{buckets} buckets per shard is too many; narrow the exponent range or lower the scale.");
        }

        Scale = scale;
        MinExponent = minExponent;
        MaxExponent = maxExponent;
        Tables = GetTables(scale);
        LowIndex = minExponent << scale;
        BucketCount = (int)buckets;
        SplitMap = new ulong[(BucketCount + 63) / 64];

        Boundaries = explicitBoundaries?.ToArray() ?? [];
        BoundaryBucket = new int[Boundaries.Length];
        double lowest = Math.ScaleB(1, minExponent), highest = Math.ScaleB(1, maxExponent);
        for (int b = 0; b < Boundaries.Length; b++)
        {
            double v = Boundaries[b];
            if (!double.IsFinite(v) || v <= lowest || v > highest)
            {
                throw new ArgumentOutOfRangeException(nameof(explicitBoundaries), v, string.Create(CultureInfo.InvariantCulture, $"Explicit boundary {v} is outside the exponential range ({lowest}, {highest}]; widen minExponent/maxExponent."));
            }

            if (b > 0 && v <= Boundaries[b - 1])
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"Explicit boundaries must be strictly increasing; {v} follows {Boundaries[b - 1]}."), nameof(explicitBoundaries));
            }

            int rel = MapToIndex(v) - LowIndex;
            BoundaryBucket[b] = rel;
            if (!IsBucketUpperEdge(v))
            {
                SplitMap[rel >> 6] |= 1UL << rel;
            }
        }

        ExplicitBoundaries = Array.AsReadOnly(Boundaries);
    }

    /// <summary>The default layout for request durations in seconds: scale 3, 2^-17 s (7.6 µs) to 2^8 s (256 s), ASP.NET Core's boundaries.</summary>
    public static HistogramLayout Default { get; } = new(3, -17, 8, AspNetCoreRequestDurationBoundaries);

    /// <summary>2^Scale buckets per power of two.</summary>
    public int Scale { get; }

    /// <summary>Lower edge of the exponential range: 2^MinExponent.</summary>
    public int MinExponent { get; }

    /// <summary>Upper edge of the exponential range: 2^MaxExponent.</summary>
    public int MaxExponent { get; }

    /// <summary>The explicit (classic) boundaries.</summary>
    public IReadOnlyList<double> ExplicitBoundaries { get; }

    /// <summary>Number of exponential buckets in range.</summary>
    public int ExponentialBucketCount => BucketCount;

    /// <summary>Index of the first in-range exponential bucket (the OpenTelemetry offset of an all-range histogram).</summary>
    public int FirstIndex => LowIndex;

    /// <summary>The relative error bound of a quantile that falls in an in-range exponential bucket: <c>(base − 1) / (base + 1)</c>.</summary>
    public double RelativeError
    {
        get
        {
            double b = Math.Pow(2, Math.ScaleB(1, -Scale));
            return (b - 1) / (b + 1);
        }
    }

    /// <summary>Bytes one recording CPU's shard takes (see the remarks for the formula).</summary>
    public int BytesPerShard => (8 * (BucketCount + Boundaries.Length + ShardLayout.ScalarCells + ShardLayout.Padding + ShardLayout.TailPadding)) + 16;

    /// <summary>
    /// The OpenTelemetry exponential bucket index of a positive finite value: the <c>i</c> with <c>base^i &lt; value &lt;= base^(i+1)</c>,
    /// exact for every double. Values outside the layout's range get their true index too.
    /// </summary>
    /// <param name="value">A positive, finite, normal value.</param>
    public int MapToIndex(double value)
    {
        if (!(value > 0) || !double.IsFinite(value) || !double.IsNormal(value))
        {
            throw new ArgumentOutOfRangeException(nameof(value), value, "Only positive, finite, normal values have an exponential index.");
        }

        return Tables.Index((ulong)BitConverter.DoubleToInt64Bits(value));
    }

    /// <inheritdoc/>
    public bool Equals(HistogramLayout? other) =>
        other is not null && (ReferenceEquals(this, other) || (Scale == other.Scale && MinExponent == other.MinExponent && MaxExponent == other.MaxExponent && Boundaries.AsSpan().SequenceEqual(other.Boundaries)));

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as HistogramLayout);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Scale, MinExponent, MaxExponent, Boundaries.Length);

    internal bool IsSplit(int rel) => (SplitMap[rel >> 6] & (1UL << rel)) != 0;

    // A boundary equal to base^(i+1) (only powers of two are exactly representable) needs no split.
    private static bool IsBucketUpperEdge(double v) => (BitConverter.DoubleToInt64Bits(v) & 0xF_FFFF_FFFF_FFFF) == 0;

    private static ScaleTables GetTables(int scale) =>
        Volatile.Read(ref s_tables[scale]) ?? Interlocked.CompareExchange(ref s_tables[scale], new ScaleTables(scale), null) ?? s_tables[scale]!;

    /// <summary>Per-scale lookup tables for the exact index.</summary>
    internal sealed class ScaleTables
    {
        public readonly int Scale;
        public readonly int LutShift;
        public readonly ushort[] Counts; // #{k >= 1 : B_k <= lower edge of cell}
        public readonly ulong[] Bounds; // Bounds[k] = B_k for 1 <= k < 2^scale; Bounds[2^scale] = ulong.MaxValue; Bounds[0] = 0

        public ScaleTables(int scale)
        {
            Scale = scale;
            int n = 1 << scale;
            int lutBits = scale + 1; // cells narrower than the smallest gap between boundaries (ln 2 / 2^scale)
            LutShift = 52 - lutBits;
            Bounds = new ulong[n + 1];
            Bounds[n] = ulong.MaxValue;
            for (int k = 1; k < n; k++)
            {
                Bounds[k] = SmallestFractionAbove(k, scale);
            }

            Counts = new ushort[1 << lutBits];
            int j = 0;
            for (int cell = 0; cell < Counts.Length; cell++)
            {
                ulong low = (ulong)cell << LutShift;
                while (j + 1 < n && Bounds[j + 1] <= low)
                {
                    j++;
                }

                Counts[cell] = (ushort)j;
            }

            // Each cell may hold at most one boundary, so one compare finishes the job.
            for (int cell = 0; cell < Counts.Length; cell++)
            {
                ulong low = (ulong)cell << LutShift, high = low + (1UL << LutShift);
                int inside = 0;
                for (int k = 1; k < n; k++)
                {
                    inside += Bounds[k] > low && Bounds[k] < high ? 1 : 0;
                }

                if (inside > 1)
                {
                    throw new InvalidOperationException("lookup cell holds two boundaries");
                }
            }
        }

        /// <summary>Exact index of a positive finite double from its bits.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int Index(ulong bits)
        {
            int exponent = (int)(bits >> 52) - 1023;
            ulong fraction = bits & 0xF_FFFF_FFFF_FFFF;
            int j = Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(Counts), (nint)(fraction >> LutShift));
            j += fraction >= Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(Bounds), j + 1) ? 1 : 0;
            return (exponent << Scale) + j - (fraction == 0 ? 1 : 0);
        }

        /// <summary>Smallest 52-bit fraction F with (1 + F/2^52)^(2^scale) &gt; 2^k, by binary search in exact integers.</summary>
        private static ulong SmallestFractionAbove(int k, int scale)
        {
            int power = 1 << scale;
            BigInteger target = BigInteger.One << ((52 * power) + k); // 2^k × (2^52)^power
            ulong lo = 0, hi = 1UL << 52; // predicate false at lo (for k >= 1), true at hi (2^power > 2^k)
            while (hi - lo > 1)
            {
                ulong mid = lo + ((hi - lo) / 2);
                if (BigInteger.Pow((BigInteger.One << 52) + mid, power) > target)
                {
                    hi = mid;
                }
                else
                {
                    lo = mid;
                }
            }

            return hi;
        }
    }
}

/// <summary>Cell offsets inside one shard's <c>long[]</c>.</summary>
internal static class ShardLayout
{
    /// <summary>Longs of padding before the first cell: 128 bytes, so no earlier object shares a line pair with a cell.</summary>
    public const int Padding = Internal.CacheLine.Int64s;

    /// <summary>
    /// Longs of padding after the last cell: 104 bytes. With the next shard's own 128-byte front padding and the array
    /// header, hot cells of two shards are always more than 128 bytes apart, and the default shard stays at 2 KiB.
    /// </summary>
    public const int TailPadding = Internal.CacheLine.Int64s - 3;

    public const int Sum = Padding;          // double bits, CAS-added by Record(double)
    public const int SumTicks = Padding + 1; // long, added by RecordTicks
    public const int Min = Padding + 2;      // double bits, cumulative
    public const int Max = Padding + 3;      // double bits, cumulative
    public const int DeltaMin = Padding + 4; // double bits, reset by CollectDelta
    public const int DeltaMax = Padding + 5; // double bits, reset by CollectDelta
    public const int SumTicksCarry = Padding + 6; // long: units of TickCarry moved out of SumTicks, so no tick sum wraps
    public const int Invalid = Padding + 7;
    public const int Zero = Padding + 8;
    public const int Underflow = Padding + 9;
    public const int Overflow = Padding + 10;
    public const int ScalarCells = 11;

    /// <summary>
    /// 2^48 ticks: when a shard's tick sum reaches it, that much moves to <see cref="SumTicksCarry"/>. A shard's
    /// <see cref="SumTicks"/> stays far from 2^63 (about 3.3 days of summed duration at 1 GHz ticks per carry), and the
    /// sum of every shard's cell stays below 2^63 for up to 4096 slots.
    /// </summary>
    public const long TickCarry = 1L << 48;
    public const int Buckets = Padding + ScalarCells;

    /// <summary>Total longs for a layout.</summary>
    public static int Length(HistogramLayout layout) => Buckets + layout.BucketCount + layout.Boundaries.Length + TailPadding;

    /// <summary>First split cell: one per explicit boundary, after the buckets.</summary>
    public static int Splits(HistogramLayout layout) => Buckets + layout.BucketCount;
}
