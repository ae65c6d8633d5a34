using System.Runtime.CompilerServices;
using PerCpu.Internal;

namespace PerCpu;

/// <summary>
/// A monotonic 64-bit counter whose writes touch only the current CPU's cache line; reads fold the per-CPU shards.
/// </summary>
/// <remarks>
/// <para><b>Writes</b> (<see cref="Increment"/>, <see cref="Add"/>): lock-free, allocation-free after a CPU's first
/// write. On the rseq write path (<see cref="ProcessorId.WritePath"/>) one restartable section with a plain
/// <c>xadd</c>, no <c>lock</c> prefix; otherwise one uncontended interlocked add on the current CPU's padded cell. Safe
/// from any number of threads.</para>
/// <para><b>Reads</b> (<see cref="Sum"/>): not an atomic snapshot of all shards. While writers run, a read returns a
/// value between the total of writes completed before the read began and the total of writes started before it
/// ended. Reads of one counter made one after another never decrease. At quiescence (no write in flight) a read is
/// exact.</para>
/// <para><b>Deltas</b> (<see cref="Collect"/>): returns the increase since the previous collect. Collects are
/// serialized with each other, never with writers, and lose nothing: the sum of all collected deltas plus the
/// increase after the last collect equals the total added.</para>
/// <para><b>Memory</b>: <c>24 + 8 × (SlotCount + 1)</c> bytes for the shard array (the extra slot is the shared cell of
/// threads that cannot take an rseq section), plus 144 bytes for each slot that has written (at most
/// <see cref="ProcessorId.SlotCount"/> + 1; <see cref="ProcessorId.SlotCount"/> is the processor count rounded up to a
/// power of two), plus
/// this object (about 48 bytes). On a 64-CPU server with every CPU writing: about 9.8 KiB.</para>
/// <para><b>Limits</b>: the total saturates at <see cref="long.MaxValue"/> instead of wrapping (an
/// <see cref="Interlocked.Add(ref long, long)"/> would go negative): each CPU slot's cell is read as unsigned, so reads
/// are exact until one slot alone has been added 2^64 - 1 (twice <see cref="long.MaxValue"/>), and a read never
/// returns less than an earlier one below that.</para>
/// </remarks>
public sealed class PerCpuCounter
{
    private readonly PerCpuInt64 _shards = new();
    private readonly Lock _collectLock = new();
    private long _lastCollected;

    /// <summary>Adds one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Increment() => _shards.Add(1);

    /// <summary>Adds <paramref name="value"/>.</summary>
    /// <param name="value">A non-negative amount.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="value"/> is negative: a monotonic counter cannot go down.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(long value)
    {
        if (value < 0)
        {
            ThrowNegative(value);
        }

        _shards.Add(value);
    }

    /// <summary>The total added so far. See the type's remarks for what a read returns while writers run.</summary>
    public long Sum() => _shards.SumSaturating();

    /// <summary>
    /// The increase since the previous call (or since creation), for delta temporality. Loses no concurrent add: an
    /// add not seen by this collect is seen by the next one.
    /// </summary>
    public long Collect()
    {
        lock (_collectLock)
        {
            long now = _shards.SumSaturating();
            long delta = now - _lastCollected;
            _lastCollected = now;
            return delta;
        }
    }

    /// <summary>CPU slots that have written to this counter (each holds one padded cell).</summary>
    public int ShardCount => _shards.AllocatedCells;

    [MethodImpl(MethodImplOptions.NoInlining)] // keeps the throw out of the inlined fast path
    private static void ThrowNegative(long value) =>
        throw new ArgumentOutOfRangeException(nameof(value), value, "A monotonic counter cannot be decreased; use PerCpuUpDownCounter for values that go down.");
}
