using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PerCpu.Internal;

/// <summary>
/// The kernel-grade write path: per-CPU adds inside Linux restartable sequences (rseq), with no <c>lock</c> prefix.
/// Chosen once per process, on first use, and never switched: cells written by rseq sections must never be written by
/// an interlocked operation from another CPU.
/// </summary>
/// <remarks>
/// <para><b>How a write works</b>: a small x86-64 stub (written into an anonymous page, which is then switched from
/// read+write to read+execute, never both) stores the address of its <c>struct rseq_cs</c> descriptor into the
/// thread's <c>rseq-&gt;rseq_cs</c> (glibc registered the area; PerCpu only uses the documented ABI: that pointer store,
/// the <c>cpu_id</c> and <c>mm_cid</c> reads, and the abort signature glibc registered, <c>RSEQ_SIG</c> 0x53053053). Inside
/// the section it reads <c>cpu_id</c> (negative: this thread has no registered area, so it must not take the section),
/// reads <c>mm_cid</c> (a dense id that no two running threads of the process share), loads that slot's cell object
/// and adds with one instruction, the commit: <c>xadd</c> without <c>lock</c>, or <c>movsd</c> of a sum computed in the
/// section. If the thread is preempted, migrated or interrupted by a signal before the commit, the kernel moves it to
/// the abort handler, which starts the section again, so no two threads ever interleave a read-modify-write of a cell.
/// </para>
/// <para><b>Cells</b>: instruments keep <see cref="ProcessorId.SlotCount"/> + 1 slots. Slots below
/// <see cref="ProcessorId.SlotCount"/> are written only by sections (on the thread whose <c>mm_cid</c> is the slot); the
/// last slot is the shared cell of threads that cannot take a section (no registered area, or an <c>mm_cid</c> beyond
/// the slots), written only with interlocked operations. Readers load every cell with plain volatile 64-bit loads.</para>
/// <para><b>When</b>: Linux x86-64, glibc-registered rseq with <c>mm_cid</c> (kernel 6.3 or later: feature size of at
/// least 28), an area aligned to 32 bytes, executable memory allowed, a startup self-test that adds exactly, and no
/// <c>PERCPU_RSEQ=0</c>. Otherwise every write uses the interlocked path. <see cref="ProcessorId.WritePath"/> says which,
/// and why.</para>
/// </remarks>
internal static unsafe class RseqWrites
{
    /// <summary>The environment variable that turns the rseq write path off (<c>0</c>, <c>false</c> or <c>off</c>).</summary>
    public const string EnvironmentVariable = "PERCPU_RSEQ";

    /// <summary>glibc's <c>RSEQ_SIG</c> on x86: the four bytes before every abort handler.</summary>
    public const uint Signature = 0x53053053;

    /// <summary>Whether writes take rseq sections. Read-only after startup, so the JIT folds the branch.</summary>
    public static readonly bool Enabled;

    /// <summary><c>int add(nint* slots, nint byteOffset, long value, long* newValue)</c>: the slot written (0 or more), -1 when this thread cannot take a section, or -(slot + 2) when the slot has no cell yet.</summary>
    public static readonly nint AddStub;

    /// <summary><c>int addDouble(nint* slots, nint byteOffset, double value)</c>: as <see cref="AddStub"/>, for a double cell.</summary>
    public static readonly nint AddDoubleStub;

    /// <summary><c>int addTwo(nint* slots, nint offset1, long value1, nint offset2, long value2, long* newValue2)</c>: two sections, one call (see <see cref="RseqStubs"/>).</summary>
    public static readonly nint AddTwoStub;

    /// <summary><c>int addThenDouble(nint* slots, nint offset1, long value1, nint offset2, double value2)</c>.</summary>
    public static readonly nint AddThenDoubleStub;

    /// <summary>Why the path was chosen or refused.</summary>
    public static readonly string Detail;

    /// <summary>Offset of a <c>long[]</c>'s first element from the object reference.</summary>
    public static readonly nint ArrayDataOffset = ComputeArrayDataOffset();

    /// <summary>Offset of <see cref="PaddedInt64.Value"/> from the object reference.</summary>
    public static readonly nint PaddedValueOffset = ComputePaddedValueOffset();

    private static readonly nint s_rseqOffset;

    static RseqWrites()
    {
        Detail = "not initialized";
        try
        {
            (Enabled, Detail, RseqStubs.Entries entries, s_rseqOffset) = Initialize(Environment.GetEnvironmentVariable(EnvironmentVariable));
            (AddStub, AddDoubleStub, AddTwoStub, AddThenDoubleStub) = entries;
        }
        catch (Exception ex)
        {
            Enabled = false;
            Detail = $"rseq probe failed ({ex.GetType().Name}: {ex.Message}); interlocked writes";
        }
    }

    /// <summary>The offset of the rseq area from the thread pointer the stubs were built for (0 when disabled).</summary>
    internal static nint RseqOffset => s_rseqOffset;

    /// <summary>Adds <paramref name="value"/> to a cell of the current CPU's <see cref="PaddedInt64"/>; returns the slot, or a negative code (see <see cref="AddStub"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Add(PaddedInt64?[] cells, long value)
    {
        fixed (byte* slots = &Unsafe.As<PaddedInt64?, byte>(ref MemoryMarshal.GetArrayDataReference(cells)))
        {
            return ((delegate* unmanaged[SuppressGCTransition]<nint*, nint, long, long*, int>)AddStub)((nint*)slots, PaddedValueOffset, value, null);
        }
    }

    /// <summary>Adds <paramref name="value"/> to cell <paramref name="cell"/> of the current CPU's shard.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Add(long[]?[] shards, int cell, long value)
    {
        fixed (byte* slots = &Unsafe.As<long[]?, byte>(ref MemoryMarshal.GetArrayDataReference(shards)))
        {
            return ((delegate* unmanaged[SuppressGCTransition]<nint*, nint, long, long*, int>)AddStub)((nint*)slots, ArrayDataOffset + (cell * sizeof(long)), value, null);
        }
    }

    /// <summary>Adds and returns the cell's new value in <paramref name="newValue"/> (valid when the result is 0 or more).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Add(long[]?[] shards, int cell, long value, out long newValue)
    {
        long result = 0;
        int slot;
        fixed (byte* slots = &Unsafe.As<long[]?, byte>(ref MemoryMarshal.GetArrayDataReference(shards)))
        {
            slot = ((delegate* unmanaged[SuppressGCTransition]<nint*, nint, long, long*, int>)AddStub)((nint*)slots, ArrayDataOffset + (cell * sizeof(long)), value, &result);
        }

        newValue = result;
        return slot;
    }

    /// <summary>Adds a double to a double cell (stored as its bits) of the current CPU's shard.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int AddDouble(long[]?[] shards, int cell, double value)
    {
        fixed (byte* slots = &Unsafe.As<long[]?, byte>(ref MemoryMarshal.GetArrayDataReference(shards)))
        {
            return ((delegate* unmanaged[SuppressGCTransition]<nint*, nint, double, int>)AddDoubleStub)((nint*)slots, ArrayDataOffset + (cell * sizeof(long)), value);
        }
    }

    /// <summary>
    /// A histogram record's two adds in one call: <paramref name="value1"/> to <paramref name="cell1"/> and
    /// <paramref name="value2"/> to <paramref name="cell2"/> (with its new value). Result: the first slot; a negative code
    /// when nothing was added; or the first slot + <see cref="RseqStubs.SecondNotDone"/> when only the first add ran.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int AddTwo(long[]?[] shards, int cell1, long value1, int cell2, long value2, out long newValue2)
    {
        long result = 0;
        int slot;
        fixed (byte* slots = &Unsafe.As<long[]?, byte>(ref MemoryMarshal.GetArrayDataReference(shards)))
        {
            slot = ((delegate* unmanaged[SuppressGCTransition]<nint*, nint, long, nint, long, long*, int>)AddTwoStub)(
                (nint*)slots, ArrayDataOffset + (cell1 * sizeof(long)), value1, ArrayDataOffset + (cell2 * sizeof(long)), value2, &result);
        }

        newValue2 = result;
        return slot;
    }

    /// <summary>As <see cref="AddTwo"/>, the second add being a double added to a double cell.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int AddThenDouble(long[]?[] shards, int cell1, long value1, int cell2, double value2)
    {
        fixed (byte* slots = &Unsafe.As<long[]?, byte>(ref MemoryMarshal.GetArrayDataReference(shards)))
        {
            return ((delegate* unmanaged[SuppressGCTransition]<nint*, nint, long, nint, double, int>)AddThenDoubleStub)(
                (nint*)slots, ArrayDataOffset + (cell1 * sizeof(long)), value1, ArrayDataOffset + (cell2 * sizeof(long)), value2);
        }
    }

    /// <summary>The result code of a slot that has no cell yet, and back.</summary>
    public static int MissingSlot(int code) => -code - 2;

    private static (bool, string, RseqStubs.Entries, nint) Initialize(string? environment)
    {
        if (environment is not null && (environment.Trim() is "0" || environment.Trim().Equals("false", StringComparison.OrdinalIgnoreCase) || environment.Trim().Equals("off", StringComparison.OrdinalIgnoreCase)))
        {
            return (false, $"turned off by {EnvironmentVariable}={environment}; interlocked writes", default, 0);
        }

        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return (false, "rseq sections need Linux on x86-64; interlocked writes", default, 0);
        }

        if (!ProcessorId.IsAvailable(ProcessorIdStrategy.RseqMmCid, out string detail))
        {
            return (false, $"no usable rseq mm_cid ({detail}); interlocked writes", default, 0);
        }

        if (!Libc.TryGetExport("__rseq_offset", out nint offsetAddress) || !Libc.TryGetExport("__rseq_size", out nint sizeAddress))
        {
            return (false, "glibc exports no __rseq_offset; interlocked writes", default, 0);
        }

        uint size = *(uint*)sizeAddress;
        nint offset = *(nint*)offsetAddress;
        nuint featureSize = Libc.GetAuxVal(Libc.AtRseqFeatureSize);
        if (size < 20 || featureSize < 28)
        {
            return (false, $"__rseq_size {size}, AT_RSEQ_FEATURE_SIZE {featureSize}: no mm_cid; interlocked writes", default, 0);
        }

        nint area = Libc.PthreadSelf() + offset;
        if ((area & 31) != 0 || offset is < int.MinValue / 2 or > int.MaxValue / 2)
        {
            return (false, $"rseq area at offset {offset} is not 32-byte aligned or out of reach; interlocked writes", default, 0);
        }

        int mask = ProcessorId.SlotCount - 1;
        nint page = RseqStubs.Build(offset, mask, out RseqStubs.Entries entries, out string? refusal);
        if (page == 0)
        {
            return (false, refusal + "; interlocked writes", default, 0);
        }

        string? failure = RseqSelfTest.Run(entries, ArrayDataOffset, ProcessorId.SlotCount);
        if (failure is not null)
        {
            _ = Libc.Munmap(page, (nuint)Environment.SystemPageSize);
            return (false, $"startup self-test failed ({failure}); interlocked writes", default, 0);
        }

        return (true, $"rseq sections on mm_cid (__rseq_offset {offset}, __rseq_size {size}, feature size {featureSize}); self-test exact", entries, offset);
    }

    private static nint ComputeArrayDataOffset()
    {
        long[] probe = new long[1];
        return Unsafe.ByteOffset(ref Unsafe.As<RawObject>(probe).Data, ref Unsafe.As<long, byte>(ref probe[0])) + sizeof(nint);
    }

    private static nint ComputePaddedValueOffset()
    {
        var probe = new PaddedInt64();
        return Unsafe.ByteOffset(ref Unsafe.As<RawObject>(probe).Data, ref Unsafe.As<long, byte>(ref probe.Value)) + sizeof(nint);
    }

    /// <summary>The first field of any object: its address is the object reference plus the method table pointer.</summary>
    private sealed class RawObject
    {
#pragma warning disable CS0649 // never written: only its address is taken, through Unsafe.As of another object
        public byte Data;
#pragma warning restore CS0649
    }
}

/// <summary>
/// The startup self-test of the rseq stubs. A class of its own with no static state: its threads run while
/// <see cref="RseqWrites"/>'s static constructor waits for them, so they must not touch that class.
/// </summary>
internal static unsafe class RseqSelfTest
{
    /// <summary>Four threads add through the stubs into fresh cells; the totals must be exact.</summary>
    public static string? Run(RseqStubs.Entries stubs, nint arrayDataOffset, int slots)
    {
        const int Threads = 4, Adds = 20_000;
        var cells = new long[]?[slots + 1];
        var shared = new long[4];
        string? problem = null;
        var workers = new Thread[Threads];
        for (int t = 0; t < Threads; t++)
        {
            workers[t] = new Thread(() =>
            {
                for (int i = 0; i < Adds && problem is null; i++)
                {
                    Until(cells, slots, ref problem, ref shared[0], p => ((delegate* unmanaged[SuppressGCTransition]<nint*, nint, long, long*, int>)stubs.Add)(p, arrayDataOffset, 1, null));
                    Until(cells, slots, ref problem, ref shared[2], p => ((delegate* unmanaged[SuppressGCTransition]<nint*, nint, double, int>)stubs.AddDouble)(p, arrayDataOffset + sizeof(long), 0.5));

                    // The two-section stubs: cell 2 gets 1 per call of either, cell 3 gets 2, the double cell 1 gets 0.25.
                    int r = Two(cells, p => ((delegate* unmanaged[SuppressGCTransition]<nint*, nint, long, nint, long, long*, int>)stubs.AddTwo)(p, arrayDataOffset + 16, 1, arrayDataOffset + 24, 2, null));
                    int u = Two(cells, p => ((delegate* unmanaged[SuppressGCTransition]<nint*, nint, long, nint, double, int>)stubs.AddThenDouble)(p, arrayDataOffset + 16, 1, arrayDataOffset + 8, 0.25));
                    if (r < 0 || u < 0 || r >= RseqStubs.SecondNotDone || u >= RseqStubs.SecondNotDone)
                    {
                        problem ??= $"a two-section stub returned {r}, {u} on a registered thread with every cell present";
                    }
                }
            }) { IsBackground = true };
            workers[t].Start();
        }

        foreach (Thread w in workers)
        {
            w.Join();
        }

        if (problem is not null)
        {
            return problem;
        }

        long count = shared[0], firsts = 0, seconds = 0;
        double sum = shared[2] * 0.5;
        foreach (long[]? c in cells)
        {
            if (c is not null)
            {
                count += c[0];
                sum += BitConverter.Int64BitsToDouble(c[1]);
                firsts += c[2];
                seconds += c[3];
            }
        }

        long n = (long)Threads * Adds;
        return count == n && sum == n * 0.75 && firsts == 2 * n && seconds == 2 * n
            ? null
            : $"{count} adds, sum {sum}, {firsts} and {seconds} two-section adds for {n} rounds";
    }

    /// <summary>One add through a stub: creates missing cells and tries again; a thread without a section counts in <paramref name="fallback"/>.</summary>
    private static void Until(long[]?[] cells, int slots, ref string? problem, ref long fallback, StubCall call)
    {
        while (true)
        {
            int r;
            fixed (byte* p = &Unsafe.As<long[]?, byte>(ref MemoryMarshal.GetArrayDataReference(cells)))
            {
                r = call((nint*)p);
            }

            if (r >= slots || (r < -1 && (-r - 2) >= slots))
            {
                problem = $"result {r} names a slot beyond {slots}";
                return;
            }

            if (r >= 0)
            {
                return;
            }

            if (r == -1)
            {
                Interlocked.Increment(ref fallback);
                return;
            }

            Interlocked.CompareExchange(ref cells[(-r - 2)], new long[4], null);
        }
    }

    /// <summary>A two-section call on a thread that can take sections; missing cells are created first.</summary>
    private static int Two(long[]?[] cells, StubCall call)
    {
        for (int s = 0; s < cells.Length; s++)
        {
            if (Volatile.Read(ref cells[s]) is null)
            {
                Interlocked.CompareExchange(ref cells[s], new long[4], null);
            }
        }

        fixed (byte* p = &Unsafe.As<long[]?, byte>(ref MemoryMarshal.GetArrayDataReference(cells)))
        {
            return call((nint*)p);
        }
    }

    private delegate int StubCall(nint* slots);
}
