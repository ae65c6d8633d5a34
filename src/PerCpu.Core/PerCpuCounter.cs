using System.Runtime.CompilerServices;
using PerCpu.Internal;

namespace PerCpu;

/// <summary>
/// A monotonic 64-bit counter whose writes touch only the current CPU's cache line; reads fold the per-CPU shards.
/// </summary>
/// <remarks>
/// <para><b>Writes</b> (<see cref="Increment"/>, <see cref="Add"/>): lock-free, allocation-free after a CPU's first
/// write, one uncontended interlocked add on the current CPU's padded cell. Safe from any number of threads.</para>
/// <para><b>Reads</b> (<see cref="Sum"/>): not an atomic snapshot of all shards. While writers run, a read returns a
/// value between the total of writes completed before the read began and the total of writes started before it
/// ended. Reads of one counter made one after another never decrease. At quiescence (no write in flight) a read is
/// exact.</para>
/// <para><b>Deltas</b> (<see cref="Collect"/>): returns the increase since the previous collect. Collects are
/// serialized with each other, never with writers, and lose nothing: the sum of all collected deltas plus the
/// increase after the last collect equals the total added.</para>
/// <para><b>Memory</b>: <c>24 + 8 × SlotCount</c> bytes for the shard array, plus 144 bytes for each CPU slot that has
/// written (at most <see cref="ProcessorId.SlotCount"/>, the processor count rounded up to a power of two), plus
/// this object (about 48 bytes). On a 64-CPU server with every CPU writing: about 9.8 KiB.</para>
/// <para>The total wraps silently beyond <see cref="long.MaxValue"/>, as an <see cref="Interlocked.Add(ref long, long)"/> would.</para>
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
    public long Sum() => _shards.Sum();

    /// <summary>
    /// The increase since the previous call (or since creation), for delta temporality. Loses no concurrent add: an
    /// add not seen by this collect is seen by the next one.
    /// </summary>
    public long Collect()
    {
        lock (_collectLock)
        {
            long now = _shards.Sum();
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
