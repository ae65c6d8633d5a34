using System.Runtime.CompilerServices;
using PerCpu.Internal;

namespace PerCpu;

/// <summary>
/// A 64-bit counter that goes up and down (active requests, queue depth, a reference count), with per-CPU writes
/// and folded reads, in the manner of the kernel's <c>percpu_counter</c>.
/// </summary>
/// <remarks>
/// <para><b>Writes</b>: lock-free, one uncontended interlocked add on the current CPU's padded cell. An increment on
/// one CPU and the matching decrement on another land in different cells; only their sum is meaningful.</para>
/// <para><b>Reads</b> (<see cref="Sum"/>): not an atomic snapshot. While writers run, the value can be any sum of a
/// subset of in-flight writes on top of those completed before the read began, so it may transiently be off by the
/// number of in-flight updates (and, for a gauge that is in truth never negative, may read below zero by as much).
/// At quiescence a read is exact.</para>
/// <para><b>Memory</b>: the same as <see cref="PerCpuCounter"/>: <c>24 + 8 × SlotCount</c> bytes plus 144 bytes per
/// CPU slot that has written.</para>
/// </remarks>
public sealed class PerCpuUpDownCounter
{
    private readonly PerCpuInt64 _shards = new();

    /// <summary>Adds <paramref name="value"/> (any sign).</summary>
    /// <param name="value">The amount.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(long value) => _shards.Add(value);

    /// <summary>Adds one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Increment() => _shards.Add(1);

    /// <summary>Subtracts one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Decrement() => _shards.Add(-1);

    /// <summary>The current value. See the type's remarks for what a read returns while writers run.</summary>
    public long Sum() => _shards.Sum();

    /// <summary>The value of a counter that was only ever added non-negative amounts (the Meter API listener's monotonic
    /// counters), saturating at <see cref="long.MaxValue"/> as <see cref="PerCpuCounter.Sum"/> does.</summary>
    internal long SumSaturating() => _shards.SumSaturating();

    /// <summary>CPU slots that have written to this counter.</summary>
    public int ShardCount => _shards.AllocatedCells;
}
