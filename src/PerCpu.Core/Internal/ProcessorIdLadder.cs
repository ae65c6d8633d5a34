using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace PerCpu.Internal;

/// <summary>
/// Detects, validates and measures every <see cref="ProcessorIdStrategy"/> once, and picks one.
/// </summary>
/// <remarks>
/// Every probe fails safe: any exception, a missing instruction, a refused <c>mprotect</c>, an unregistered rseq
/// area, or a validation sample that disagrees with the OS's <c>sched_getcpu</c> marks that strategy unavailable,
/// with the reason, and the ladder moves on. <see cref="Probe"/> lets tests inject those failures.
/// </remarks>
internal sealed unsafe class ProcessorIdLadder
{
    /// <summary>Samples compared with the OS's answer before a strategy is trusted.</summary>
    internal const int ValidationSamples = 512;

    /// <summary>
    /// A strategy earlier in the ladder is kept when it is within this factor of the fastest: the measurement is a
    /// few microseconds on a possibly busy machine, and earlier strategies are denser (mm_cid) or cheaper to keep.
    /// </summary>
    internal const double TieFactor = 1.15;

    private static readonly byte[] s_rdpidCode = [0xF3, 0x0F, 0xC7, 0xF8, 0xC3]; // rdpid rax; ret
    private static readonly byte[] s_rdtscpCode = [0x0F, 0x01, 0xF9, 0x89, 0xC8, 0xC3]; // rdtscp; mov eax, ecx; ret

    private readonly Probe _probe;
    private readonly CpuSlotMap _timingMap = new(ProcessorId.ComputeSlotCount(ProcessorId.UsableCpuCount));
    private readonly ProcessorIdCandidate[] _candidates;
    private nint _rseqOffset;

    public ProcessorIdLadder(Probe probe)
    {
        _probe = probe;
        _candidates = new ProcessorIdCandidate[(int)ProcessorIdStrategy.CachedCpuId + 1];
        _candidates[0] = new ProcessorIdCandidate(ProcessorIdStrategy.Auto, true, "chooses among the others", double.NaN);

        bool schedOk = Detect(ProcessorIdStrategy.SchedGetCpu, DetectSchedGetCpu);
        _rseqOffset = 0;
        Detect(ProcessorIdStrategy.RseqCpuId, () => DetectRseq(mmCid: false, schedOk));
        Detect(ProcessorIdStrategy.RseqMmCid, () => DetectRseq(mmCid: true, schedOk));
        Detect(ProcessorIdStrategy.Rdpid, () => DetectStub(rdpid: true, schedOk));
        Detect(ProcessorIdStrategy.Rdtscp, () => DetectStub(rdpid: false, schedOk));
        Detect(ProcessorIdStrategy.CurrentProcessorId, () => Thread.GetCurrentProcessorId() >= 0
            ? (true, "Thread.GetCurrentProcessorId()")
            : (false, "Thread.GetCurrentProcessorId() returned a negative id"));
        Detect(ProcessorIdStrategy.ManagedThreadId, () => (true, "last resort: stripes by managed thread id"));
        Detect(ProcessorIdStrategy.CachedCpuId, () => schedOk
            ? (true, $"sched_getcpu once per {CachedCpuId.RefreshEvery} reads per thread")
            : (false, "needs sched_getcpu"));
        Measure();
    }

    /// <summary>The RDPID stub (read+execute memory), or 0.</summary>
    public nint RdpidStub { get; private set; }

    /// <summary>The RDTSCP stub, or 0.</summary>
    public nint RdtscpStub { get; private set; }

    /// <summary>What the ladder found for each strategy, in ladder order (excluding Auto).</summary>
    public IReadOnlyList<ProcessorIdCandidate> Candidates => _candidates[1..];

    public bool IsAvailable(ProcessorIdStrategy strategy, out string detail)
    {
        ProcessorIdCandidate c = _candidates[(int)strategy];
        detail = c.Detail;
        return c.Available;
    }

    /// <summary>
    /// Offset from the thread pointer of the field an rseq strategy reads (struct rseq, include/uapi/linux/rseq.h:
    /// u32 cpu_id_start; u32 cpu_id; u64 rseq_cs; u32 flags; u32 node_id; u32 mm_cid), or 0 for other strategies.
    /// </summary>
    public nint RseqFieldOffset(ProcessorIdStrategy strategy) => strategy switch
    {
        ProcessorIdStrategy.RseqCpuId when _rseqOffset != 0 => _rseqOffset + (1 * sizeof(int)),
        ProcessorIdStrategy.RseqMmCid when _rseqOffset != 0 => _rseqOffset + (6 * sizeof(int)),
        _ => 0,
    };

    /// <summary>The address of the current thread's rseq area, or null if this thread has none.</summary>
    public int* RseqAreaOfCurrentThread()
    {
        if (_rseqOffset == 0)
        {
            return null;
        }

        try
        {
            int* area = (int*)(Libc.PthreadSelf() + _rseqOffset);
            return area[1] >= 0 ? area : null;
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    /// <summary>Chooses a strategy: the requested one if available, else the fastest correct one.</summary>
    public ProcessorIdSelection Select(ProcessorIdStrategy requested, string forcedBy)
    {
        ProcessorIdCandidate[] ladder = _candidates[1..];
        string? refusal = null;
        if (requested != ProcessorIdStrategy.Auto)
        {
            ProcessorIdCandidate want = _candidates[(int)requested];
            if (want.Available)
            {
                return new ProcessorIdSelection(requested, $"forced by {forcedBy}", ladder, ProcessorId.ComputeSlotCount(ProcessorId.UsableCpuCount));
            }

            refusal = $"{requested} forced by {forcedBy} is unavailable ({want.Detail}); ";
        }

        // Fastest measured exact CPU-id strategy; the cached id only when it costs less than half of that; the
        // managed-thread stripe only when nothing else works.
        static bool Exact(ProcessorIdCandidate c) => c.Available && c.Strategy is not ProcessorIdStrategy.ManagedThreadId and not ProcessorIdStrategy.CachedCpuId;
        double best = double.PositiveInfinity;
        foreach (ProcessorIdCandidate c in ladder)
        {
            if (Exact(c) && c.NanosecondsPerCall < best)
            {
                best = c.NanosecondsPerCall;
            }
        }

        ProcessorIdCandidate cached = _candidates[(int)ProcessorIdStrategy.CachedCpuId];
        if (cached.Available && cached.NanosecondsPerCall * 2 < best)
        {
            string why = $"the cheapest exact strategy costs {best:0.00} ns; sched_getcpu cached per thread and refreshed every {CachedCpuId.RefreshEvery} reads costs {cached.NanosecondsPerCall:0.00} ns";
            return new ProcessorIdSelection(ProcessorIdStrategy.CachedCpuId, refusal + why, ladder, ProcessorId.ComputeSlotCount(ProcessorId.UsableCpuCount));
        }

        foreach (ProcessorIdCandidate c in ladder)
        {
            if (Exact(c) && c.NanosecondsPerCall <= best * TieFactor)
            {
                string why = $"fastest validated strategy ({c.NanosecondsPerCall:0.00} ns; best {best:0.00} ns, ties within {TieFactor:0.00}x go to the earlier rung)";
                return new ProcessorIdSelection(c.Strategy, refusal + why, ladder, ProcessorId.ComputeSlotCount(ProcessorId.UsableCpuCount));
            }
        }

        return new ProcessorIdSelection(ProcessorIdStrategy.ManagedThreadId, refusal + "no CPU-id strategy is available here", ladder, ProcessorId.ComputeSlotCount(ProcessorId.UsableCpuCount));
    }

    /// <summary>Reads the raw id through one strategy; -1 if unavailable.</summary>
    public int Read(ProcessorIdStrategy strategy)
    {
        if (!_candidates[(int)strategy].Available)
        {
            return -1;
        }

        return strategy switch
        {
            ProcessorIdStrategy.RseqMmCid => ReadRseq(6),
            ProcessorIdStrategy.RseqCpuId => ReadRseq(1),
            ProcessorIdStrategy.Rdpid => (int)(((delegate* unmanaged[SuppressGCTransition]<uint>)RdpidStub)() & 0xFFF),
            ProcessorIdStrategy.Rdtscp => (int)(((delegate* unmanaged[SuppressGCTransition]<uint>)RdtscpStub)() & 0xFFF),
            ProcessorIdStrategy.SchedGetCpu => Libc.SchedGetCpu(),
            ProcessorIdStrategy.CurrentProcessorId => Thread.GetCurrentProcessorId(),
            ProcessorIdStrategy.CachedCpuId => CachedCpuId.Read(),
            _ => Environment.CurrentManagedThreadId,
        };
    }

    private int ReadRseq(int index)
    {
        int* area = RseqAreaOfCurrentThread();
        return area == null ? -1 : Volatile.Read(ref area[index]);
    }

    private bool Detect(ProcessorIdStrategy strategy, Func<(bool Ok, string Detail)> detect)
    {
        (bool ok, string detail) result;
        try
        {
            result = detect();
        }
        catch (Exception ex)
        {
            // Fail safe: whatever a probe throws (missing library, symbol, instruction), the ladder moves on.
            result = (false, $"probe failed: {ex.GetType().Name}: {ex.Message}");
        }

        _candidates[(int)strategy] = new ProcessorIdCandidate(strategy, result.ok, result.detail, double.NaN);
        return result.ok;
    }

    private (bool, string) DetectSchedGetCpu()
    {
        if (!OperatingSystem.IsLinux())
        {
            return (false, "not Linux");
        }

        int cpu = Libc.SchedGetCpu();
        return cpu >= 0 ? (true, "glibc sched_getcpu") : (false, $"sched_getcpu returned {cpu}");
    }

    private (bool, string) DetectRseq(bool mmCid, bool schedOk)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return (false, "needs Linux on x64 (the thread pointer is pthread_self() only there)");
        }

        if (_probe.DisableRseq)
        {
            return (false, "disabled by the probe");
        }

        if (!schedOk)
        {
            return (false, "no sched_getcpu to validate against");
        }

        if (!Libc.TryGetExport("__rseq_offset", out nint offsetAddress) || !Libc.TryGetExport("__rseq_size", out nint sizeAddress))
        {
            return (false, "glibc exports no __rseq_offset (glibc < 2.35)");
        }

        uint size = *(uint*)sizeAddress;
        if (size == 0)
        {
            return (false, "glibc did not register rseq (__rseq_size = 0, e.g. GLIBC_TUNABLES=glibc.pthread.rseq=0)");
        }

        nint offset = *(nint*)offsetAddress;
        int* area = (int*)(Libc.PthreadSelf() + offset);
        if (area[1] < 0)
        {
            return (false, $"rseq cpu_id is {area[1]} on this thread (registration failed)");
        }

        if (mmCid)
        {
            nuint featureSize = Libc.GetAuxVal(Libc.AtRseqFeatureSize);
            if (featureSize < 28)
            {
                return (false, $"kernel rseq feature size {featureSize} < 28: no mm_cid");
            }

            for (int i = 0; i < ValidationSamples; i++)
            {
                int cid = Volatile.Read(ref area[6]);
                if (cid < 0 || cid >= CpuSlotMap.DenseIdLimit)
                {
                    return (false, $"mm_cid {cid} out of range");
                }
            }
        }

        string? disagreement = Validate(() => Volatile.Read(ref area[1]));
        if (disagreement is not null)
        {
            return (false, "cpu_id " + disagreement);
        }

        // The read is only published after validation.
        _rseqOffset = offset;
        return (true, $"__rseq_offset {offset}, __rseq_size {size}; cpu_id agreed with sched_getcpu on {ValidationSamples} samples");
    }

    private (bool, string) DetectStub(bool rdpid, bool schedOk)
    {
        string name = rdpid ? "RDPID" : "RDTSCP";
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return (false, "needs Linux on x64 (TSC_AUX holds the CPU number only there)");
        }

        if (!X86Base.X64.IsSupported)
        {
            return (false, "X86Base.CpuId unavailable (hardware intrinsics disabled?)");
        }

        bool has = rdpid
            ? (X86Base.CpuId(7, 0).Ecx & (1 << 22)) != 0
            : (uint)X86Base.CpuId(unchecked((int)0x80000000), 0).Eax >= 0x80000001 && (X86Base.CpuId(unchecked((int)0x80000001), 0).Edx & (1 << 27)) != 0;
        if (!has)
        {
            return (false, $"CPUID says this CPU has no {name}");
        }

        if (!schedOk)
        {
            return (false, "no sched_getcpu to validate against");
        }

        nint stub = CreateStub(rdpid ? s_rdpidCode : s_rdtscpCode, out string? refusal);
        if (stub == 0)
        {
            return (false, refusal!);
        }

        var read = (delegate* unmanaged[SuppressGCTransition]<uint>)stub;
        string? disagreement = Validate(() => (int)(read() & 0xFFF));
        if (disagreement is not null)
        {
            _ = Libc.Munmap(stub, (nuint)Environment.SystemPageSize);
            return (false, $"{name} {disagreement}");
        }

        if (rdpid)
        {
            RdpidStub = stub;
        }
        else
        {
            RdtscpStub = stub;
        }

        return (true, $"{name} stub; agreed with sched_getcpu on {ValidationSamples} samples");
    }

    /// <summary>W^X: map writable, copy the code, then flip to read+execute. Never writable and executable at once.</summary>
    private nint CreateStub(byte[] code, out string? refusal)
    {
        if (_probe.DenyExecutableMemory)
        {
            refusal = "executable memory refused (probe)";
            return 0;
        }

        return ExecutableMemory.Create((page, _) => code.CopyTo(page), out refusal);
    }

    /// <summary>
    /// Compares <paramref name="read"/> with the OS on the calling thread. A sample counts as a disagreement only if
    /// the OS's answer matches neither the read before it nor the read after it (a migration in between explains one
    /// mismatch, not two). Returns null when at most 1% disagree.
    /// </summary>
    private string? Validate(Func<int> read)
    {
        Func<int> os = _probe.OsReference ?? Libc.SchedGetCpu;
        int disagreements = 0;
        int before = read();
        for (int i = 0; i < ValidationSamples; i++)
        {
            int reference = os();
            int after = read();
            if (reference != before && reference != after)
            {
                disagreements++;
            }

            before = after;
        }

        return disagreements * 100 <= ValidationSamples
            ? null
            : $"disagreed with the OS on {disagreements} of {ValidationSamples} samples";
    }

    /// <summary>
    /// Times what each strategy costs a write, as <see cref="ProcessorId.GetCurrentSlot"/> performs it: the id read (for
    /// rseq: the <c>pthread_self()</c> call plus the load) and the slot mapping (a <see cref="CpuSlotMap"/> lookup, or
    /// a mask for the already dense mm_cid). Interleaved rounds, best round kept; about 1-3 ms once per process.
    /// </summary>
    private void Measure()
    {
        const int Calls = 4096;
        const int Rounds = 5;
        double[] best = new double[_candidates.Length];
        Array.Fill(best, double.PositiveInfinity);
        for (int round = 0; round < Rounds; round++)
        {
            for (int s = 1; s < _candidates.Length; s++)
            {
                if (!_candidates[s].Available)
                {
                    continue;
                }

                var strategy = (ProcessorIdStrategy)s;
                long start = Stopwatch.GetTimestamp();
                int sink = TimeLoop(strategy, Calls);
                double ns = Stopwatch.GetElapsedTime(start).TotalNanoseconds / Calls;
                GC.KeepAlive(sink);
                best[s] = Math.Min(best[s], ns);
            }
        }

        for (int s = 1; s < _candidates.Length; s++)
        {
            if (_candidates[s].Available)
            {
                _candidates[s] = _candidates[s] with { NanosecondsPerCall = Math.Round(best[s], 2) };
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // measured once at startup: must not run as tier-0 code
    private int TimeLoop(ProcessorIdStrategy strategy, int calls)
    {
        int sink = 0;
        CpuSlotMap map = _timingMap;
        switch (strategy)
        {
            case ProcessorIdStrategy.RseqMmCid:
                nint cidField = RseqFieldOffset(strategy);
                for (int i = 0; i < calls; i++)
                {
                    sink += Volatile.Read(ref *(int*)(Libc.PthreadSelf() + cidField)) & (map.SlotCount - 1); // dense: masked only
                }

                break;
            case ProcessorIdStrategy.RseqCpuId:
                nint cpuField = RseqFieldOffset(strategy);
                for (int i = 0; i < calls; i++)
                {
                    sink += map.Map(Volatile.Read(ref *(int*)(Libc.PthreadSelf() + cpuField)));
                }

                break;
            case ProcessorIdStrategy.Rdpid:
            case ProcessorIdStrategy.Rdtscp:
                var stub = (delegate* unmanaged[SuppressGCTransition]<uint>)(strategy == ProcessorIdStrategy.Rdpid ? RdpidStub : RdtscpStub);
                for (int i = 0; i < calls; i++)
                {
                    sink += map.Map((int)(stub() & 0xFFF));
                }

                break;
            case ProcessorIdStrategy.SchedGetCpu:
                for (int i = 0; i < calls; i++)
                {
                    sink += map.Map(Libc.SchedGetCpu());
                }

                break;
            case ProcessorIdStrategy.CurrentProcessorId:
                for (int i = 0; i < calls; i++)
                {
                    sink += map.Map(Thread.GetCurrentProcessorId());
                }

                break;
            case ProcessorIdStrategy.CachedCpuId:
                for (int i = 0; i < calls; i++)
                {
                    sink += map.Map(CachedCpuId.Read());
                }

                break;
            default:
                for (int i = 0; i < calls; i++)
                {
                    sink += map.Map(Environment.CurrentManagedThreadId);
                }

                break;
        }

        return sink;
    }

    /// <summary>Failure injection for tests; <see cref="Default"/> probes the real machine.</summary>
    /// <param name="DenyExecutableMemory">Behave as if <c>mprotect(PROT_EXEC)</c> were refused.</param>
    /// <param name="DisableRseq">Behave as if rseq were not registered.</param>
    /// <param name="OsReference">Replaces <c>sched_getcpu</c> as the validation reference.</param>
    internal sealed record Probe(bool DenyExecutableMemory = false, bool DisableRseq = false, Func<int>? OsReference = null)
    {
        public static Probe Default { get; } = new();
    }
}
