using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PerCpu.Internal;

/// <summary>
/// A per-CPU floating-point sum (the <c>Counter&lt;double&gt;</c> and <c>UpDownCounter&lt;double&gt;</c> of the Meter API):
/// one padded cell per CPU slot, added with a compare-and-swap on the cell's bits. The CAS retries only when another
/// thread on the same CPU slot raced it, which the per-CPU layout makes rare.
/// </summary>
internal sealed class PerCpuDouble
{
    private readonly PaddedInt64?[] _cells = new PaddedInt64?[ProcessorId.SlotCount];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(double value)
    {
        int slot = ProcessorId.GetCurrentSlot();
        PaddedInt64 cell = Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_cells), slot) ?? CreateCell(slot);
        long seen = Volatile.Read(ref cell.Value);
        while (true)
        {
            long next = BitConverter.DoubleToInt64Bits(BitConverter.Int64BitsToDouble(seen) + value);
            long previous = Interlocked.CompareExchange(ref cell.Value, next, seen);
            if (previous == seen)
            {
                return;
            }

            seen = previous;
        }
    }

    /// <summary>Folds the cells; exact at quiescence up to floating-point rounding of the per-CPU partial sums.</summary>
    public double Sum()
    {
        double sum = 0;
        foreach (PaddedInt64? cell in _cells)
        {
            if (cell is not null)
            {
                sum += BitConverter.Int64BitsToDouble(Volatile.Read(ref cell.Value));
            }
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private PaddedInt64 CreateCell(int slot)
    {
        var fresh = new PaddedInt64();
        return Interlocked.CompareExchange(ref _cells[slot], fresh, null) ?? fresh;
    }
}
