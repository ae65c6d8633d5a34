using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PerCpu.Internal;

/// <summary>
/// One 64-bit cell that shares no cache line (or adjacent-line pair) with any other hot cell.
/// </summary>
/// <remarks>
/// Layout (x64 object, addresses relative to the method-table pointer): the object header and method
/// table take 16 bytes, then <see cref="_head"/> at +8 ... <see cref="Value"/> at +64 ... <see cref="_tail"/>
/// at +128. <see cref="Value"/> therefore sits at least 64 bytes after the start of its own object and 64 bytes
/// before its end, and any two cells' values are at least 144 bytes apart wherever the GC places them; no
/// array header or neighbouring object can share its line. The stride is checked by a test.
/// </remarks>
[StructLayout(LayoutKind.Explicit)]
internal sealed class PaddedInt64
{
    [FieldOffset(0)]
    private readonly long _head;

    /// <summary>The cell. Written with <see cref="Interlocked"/>, read with <see cref="Volatile"/>.</summary>
    [FieldOffset((CacheLine.Size / 2) - sizeof(long))]
    public long Value;

    [FieldOffset(CacheLine.Size - sizeof(long))]
    private readonly long _tail;

    internal ref long Head => ref Unsafe.AsRef(in _head);

    internal ref long Tail => ref Unsafe.AsRef(in _tail);
}
