using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace PerCpu.Internal;

/// <summary>Adds shard arrays into an accumulator: the merge at read time.</summary>
/// <remarks>
/// A fixed ladder: <see cref="Vector512"/>, then <see cref="Vector256"/>, then <see cref="Vector128"/>, each only when
/// hardware-accelerated, then the scalar loop, which is also the tests' oracle. Lanes are 8-byte aligned longs: x86-64
/// and arm64 read each aligned 8-byte lane of a vector load in one piece in practice, but neither architecture promises
/// it for the whole vector, so a read racing a writer may see each cell before or after a concurrent increment, exactly
/// as a scalar read would; nothing stronger is claimed.
/// </remarks>
internal static class ShardMath
{
    /// <summary>acc[i] += src[i] for every i.</summary>
    public static void AddInto(Span<long> acc, ReadOnlySpan<long> src)
    {
        if (acc.Length != src.Length)
        {
            throw new ArgumentException("lengths differ", nameof(src));
        }

        ref long a = ref MemoryMarshal.GetReference(acc);
        ref long s = ref MemoryMarshal.GetReference(src);
        nuint n = (nuint)acc.Length, i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i + (nuint)Vector512<long>.Count <= n; i += (nuint)Vector512<long>.Count)
            {
                (Vector512.LoadUnsafe(ref a, i) + Vector512.LoadUnsafe(ref s, i)).StoreUnsafe(ref a, i);
            }
        }

        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + (nuint)Vector256<long>.Count <= n; i += (nuint)Vector256<long>.Count)
            {
                (Vector256.LoadUnsafe(ref a, i) + Vector256.LoadUnsafe(ref s, i)).StoreUnsafe(ref a, i);
            }
        }

        if (Vector128.IsHardwareAccelerated)
        {
            for (; i + (nuint)Vector128<long>.Count <= n; i += (nuint)Vector128<long>.Count)
            {
                (Vector128.LoadUnsafe(ref a, i) + Vector128.LoadUnsafe(ref s, i)).StoreUnsafe(ref a, i);
            }
        }

        for (; i < n; i++)
        {
            Unsafe.Add(ref a, i) += Volatile.Read(ref Unsafe.Add(ref s, i));
        }
    }

    /// <summary>The scalar oracle: acc[i] += src[i], one volatile read per cell.</summary>
    public static void AddIntoScalar(Span<long> acc, ReadOnlySpan<long> src)
    {
        for (int i = 0; i < acc.Length; i++)
        {
            acc[i] += Volatile.Read(in src[i]);
        }
    }
}
