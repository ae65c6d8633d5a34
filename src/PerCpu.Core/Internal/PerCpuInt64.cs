using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PerCpu.Internal;

/// <summary>
/// The shard store behind <see cref="PerCpuCounter"/> and <see cref="PerCpuUpDownCounter"/>: one lazily allocated
/// <see cref="PaddedInt64"/> per CPU slot.
/// </summary>
/// <remarks>
/// <para>Design, in the manner of <c>Striped64</c>:</para>
/// <list type="bullet">
/// <item>Layout: an array of <see cref="ProcessorId.SlotCount"/> references; the cell of a slot is allocated the first
/// time a thread writes from that slot, so a counter touched by two CPUs of a 64-CPU machine holds two cells.</item>
/// <item>Choice of cell: <see cref="ProcessorId.GetCurrentSlot"/>; no probing, no rehash, no contention detection.
/// The runtime's own per-core aggregator (<c>CounterAggregator</c>) uses <c>GetCurrentProcessorId() % min(N, 8)</c>
/// and a CAS loop on a double: it caps at 8 cells (so CPUs beyond 8 share lines), pays a CAS retry loop, and allocates
/// all cells up front. Here every CPU has its own cell, the add is one <c>lock xadd</c> with no retry, and idle CPUs
/// cost one null reference.</item>
/// <item>Why still interlocked: the thread can migrate between reading the CPU id and writing; several threads
/// share one CPU; and the reader runs concurrently. A plain <c>++</c> lost increments in our measurements (see
/// ../shared/design). On a line the CPU already owns, the interlocked add is uncontended and cheap.</item>
/// <item>Reads walk the cells with <see cref="Volatile.Read(ref readonly long)"/>; they never reset a cell, so
/// writers and readers never wait for each other.</item>
/// <item>Where the kernel allows it (<see cref="RseqWrites"/>), the add is an rseq critical section instead: the cell
/// of the thread's <c>mm_cid</c> and a plain <c>xadd</c> that the kernel restarts if the thread is preempted, migrated
/// or signalled before it commits; no <c>lock</c> prefix. Threads without a registered rseq area add to one extra,
/// interlocked-only cell. The path is chosen once per process.</item>
/// <item>Not done: no per-thread cells (a scraper could not reach them), no cell reclamation.</item>
/// </list>
/// </remarks>
internal readonly struct PerCpuInt64
{
    private readonly PaddedInt64?[] _cells;

    // One slot per CPU slot, plus the shared slot of threads that cannot take an rseq section (RseqWrites).
    public PerCpuInt64() => _cells = new PaddedInt64?[ProcessorId.SlotCount + 1];

    [MethodImpl(MethodImplOptions.AggressiveInlining)] // rseq: one stub call, no lock prefix; else one id read, one load, one lock xadd
    public void Add(long value)
    {
        if (RseqWrites.Enabled)
        {
            int r = RseqWrites.Add(_cells, value);
            if (r < 0)
            {
                AddRseqSlow(value, r);
            }

            return;
        }

        int slot = ProcessorId.GetCurrentSlot();
        Debug.Assert((uint)slot < (uint)_cells.Length, "GetCurrentSlot returns a slot below SlotCount");
        PaddedInt64? cell = Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_cells), slot);
        if (cell is null)
        {
            cell = CreateCell(slot);
        }

        Interlocked.Add(ref cell.Value, value);
    }

    /// <summary>The stub found no cell for its slot (first write from that slot), or this thread cannot take a section.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AddRseqSlow(long value, int result)
    {
        while (result < -1)
        {
            _ = CreateCell(RseqWrites.MissingSlot(result));
            result = RseqWrites.Add(_cells, value);
        }

        if (result == -1)
        {
            int shared = _cells.Length - 1; // never written by a section: interlocked only
            Interlocked.Add(ref (_cells[shared] ?? CreateCell(shared)).Value, value);
        }
    }

    /// <summary>Folds the cells. Not an atomic snapshot; exact when no write runs concurrently.</summary>
    public long Sum()
    {
        long sum = 0;
        foreach (PaddedInt64? cell in _cells)
        {
            if (cell is not null)
            {
                sum += Volatile.Read(ref cell.Value);
            }
        }

        return sum;
    }

    /// <summary>
    /// Folds the cells of a store that is only ever added non-negative amounts, each cell read as unsigned (a cell holds
    /// up to 2^64 - 1 exactly, twice <see cref="long.MaxValue"/>), and saturates at <see cref="long.MaxValue"/>: such a
    /// total never reads as negative or lower than before, where <see cref="Sum"/> would wrap.
    /// </summary>
    public long SumSaturating()
    {
        UInt128 sum = 0;
        foreach (PaddedInt64? cell in _cells)
        {
            if (cell is not null)
            {
                sum += (ulong)Volatile.Read(ref cell.Value);
            }
        }

        return sum >= long.MaxValue ? long.MaxValue : (long)sum;
    }

    /// <summary>How many slots have a cell (for memory accounting).</summary>
    public int AllocatedCells
    {
        get
        {
            int n = 0;
            foreach (PaddedInt64? cell in _cells)
            {
                n += cell is null ? 0 : 1;
            }

            return n;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // once per slot per counter
    private PaddedInt64 CreateCell(int slot)
    {
        var fresh = new PaddedInt64();
        return Interlocked.CompareExchange(ref _cells[slot], fresh, null) ?? fresh;
    }
}
