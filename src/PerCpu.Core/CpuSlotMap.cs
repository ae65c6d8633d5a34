using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace PerCpu;

/// <summary>
/// Maps raw CPU ids (which may be sparse and exceed <see cref="Environment.ProcessorCount"/>: cpusets, CPU
/// quotas, offline or hot-plugged CPUs, Windows processor groups) to dense shard slots in
/// <c>[0, SlotCount)</c>.
/// </summary>
/// <remarks>
/// Ids in <c>[0, 4096)</c> (the 12-bit CPU field of Linux's TSC_AUX and rseq ids) get a slot on first sight, in
/// order, so the first <see cref="SlotCount"/> distinct ids get distinct slots; later ids wrap around. Ids
/// outside that range (managed thread ids, for example) are folded with a multiplicative hash. No id can map
/// outside <c>[0, SlotCount)</c>. Lookups are lock-free; the first sighting of an id takes a lock once.
/// </remarks>
public sealed class CpuSlotMap
{
    /// <summary>Raw ids below this value get a dense slot of their own on first sight.</summary>
    public const int DenseIdLimit = 4096;

    private readonly int[] _table;
    private readonly int _mask;
    private readonly Lock _assignLock = new();
    private int _assigned;

    /// <summary>Creates a map onto <paramref name="slotCount"/> slots.</summary>
    /// <param name="slotCount">A power of two between 1 and 4096.</param>
    public CpuSlotMap(int slotCount)
    {
        if (slotCount < 1 || slotCount > DenseIdLimit || !BitOperations.IsPow2(slotCount))
        {
            throw new ArgumentOutOfRangeException(nameof(slotCount), slotCount, "The slot count must be a power of two between 1 and 4096.");
        }

        SlotCount = slotCount;
        _mask = slotCount - 1;
        _table = new int[DenseIdLimit];
        Array.Fill(_table, -1);
    }

    /// <summary>The number of slots; a power of two.</summary>
    public int SlotCount { get; }

    /// <summary>How many distinct dense ids have been seen so far.</summary>
    public int DistinctIdsSeen => Volatile.Read(ref _assigned);

    /// <summary>Returns the slot for <paramref name="rawId"/>, always in <c>[0, SlotCount)</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // two loads and a compare on every write
    public int Map(int rawId)
    {
        if ((uint)rawId < DenseIdLimit)
        {
            int slot = Unsafe.Add(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(_table), rawId);
            if (slot >= 0)
            {
                return slot;
            }
        }

        return MapSlow(rawId);
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // once per distinct CPU id, or for ids outside the table
    private int MapSlow(int rawId)
    {
        if ((uint)rawId >= DenseIdLimit)
        {
            // Fibonacci hashing spreads sequential thread ids over all slots.
            return (int)(((uint)rawId * 0x9E3779B9u) >> 20) & _mask;
        }

        lock (_assignLock)
        {
            int slot = _table[rawId];
            if (slot < 0)
            {
                slot = _assigned & _mask;
                _assigned++;
                Volatile.Write(ref _table[rawId], slot);
            }

            Debug.Assert(slot < SlotCount, "slots are masked on assignment");
            return slot;
        }
    }
}
