using System.Numerics;
using System.Runtime.CompilerServices;
using PerCpu.Internal;

namespace PerCpu;

/// <summary>
/// Which CPU is the calling thread on? Allocation-free, lock-free, and safe everywhere: a ladder of hardware and
/// OS strategies is detected, validated against the OS and measured once, on first use, and the fastest correct
/// one is used (see <see cref="ProcessorIdStrategy"/>).
/// </summary>
/// <remarks>
/// <para>
/// The id is a hint, never a guarantee: the thread may migrate to another CPU right after the read, and several
/// threads may share a CPU. PerCpu instruments therefore update their shard either inside an rseq critical section
/// (which the kernel restarts if the thread moves) or with one uncontended interlocked operation (see
/// <see cref="WritePath"/>); correctness never depends on the id, only the absence of contention does.
/// </para>
/// <para>
/// Override the choice with the environment variable <c>PERCPU_PROCESSOR_ID</c> (a <see cref="ProcessorIdStrategy"/>
/// name, case-insensitive), read once at startup, or at run time with <see cref="TrySetStrategy"/>. A forced strategy
/// that is unavailable falls back to the automatic choice and says so in <see cref="Selection"/>.
/// </para>
/// </remarks>
public static unsafe class ProcessorId
{
    /// <summary>The environment variable that forces a strategy.</summary>
    public const string EnvironmentVariable = "PERCPU_PROCESSOR_ID";

    private const uint TscAuxCpuMask = 0xFFF; // Linux: TSC_AUX = (node << 12) | cpu

    private static readonly int s_usableCpus = CountUsableCpus(); // first: static initializers run in textual order, and the ladder reads it
    private static readonly ProcessorIdLadder s_ladder = new(ProcessorIdLadder.Probe.Default);
    private static readonly CpuSlotMap s_map = new(ComputeSlotCount(s_usableCpus));
    private static readonly int s_slotMask = s_map.SlotCount - 1;
    // Offset of the active rseq field (cpu_id or mm_cid) from the thread pointer. Written before s_active.
    private static nint s_rseqField;
    private static int s_active = (int)Initialize();
    private static ProcessorIdSelection? s_selection; // set by Initialize(); no initializer, which would run after it

    /// <summary>The strategy in use now.</summary>
    public static ProcessorIdStrategy Strategy => (ProcessorIdStrategy)Volatile.Read(ref s_active);

    /// <summary>The strategy in use, why it was chosen, and what the ladder found for each strategy.</summary>
    public static ProcessorIdSelection Selection => Volatile.Read(ref s_selection)!;

    /// <summary>
    /// How instruments write their per-CPU cells, chosen once per process on first use and never switched:
    /// <see cref="PerCpuWritePath.Rseq"/> (restartable sequences, no <c>lock</c> prefix) where Linux x86-64 with
    /// glibc-registered rseq and <c>mm_cid</c> allows it and a startup self-test adds exactly, otherwise
    /// <see cref="PerCpuWritePath.Interlocked"/>. <c>PERCPU_RSEQ=0</c> forces the interlocked path. Independent of
    /// <see cref="Strategy"/>: an rseq write reads <c>mm_cid</c> inside its section.
    /// </summary>
    public static PerCpuWritePath WritePath => RseqWrites.Enabled ? PerCpuWritePath.Rseq : PerCpuWritePath.Interlocked;

    /// <summary>Why <see cref="WritePath"/> is what it is (for logs and diagnostics).</summary>
    public static string WritePathDetail => RseqWrites.Detail;

    /// <summary>
    /// Shard slots per instrument: the processor count rounded up to a power of two (at most 4096). Instruments keep one
    /// slot more, the shared cell of threads that cannot take an rseq section (see <see cref="WritePath"/>), so the memory
    /// of an instrument is bounded by this number plus one, times its per-slot size.
    /// </summary>
    public static int SlotCount => s_map.SlotCount;

    /// <summary>
    /// The current thread's shard slot in <c>[0, <see cref="SlotCount"/>)</c>: the raw id of <see cref="GetCurrentId"/>
    /// mapped densely (distinct CPUs get distinct slots while there are enough).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // the whole point: a few instructions on every write
    public static int GetCurrentSlot()
    {
        int active = s_active;
        if (active == (int)ProcessorIdStrategy.RseqMmCid)
        {
            // mm_cid is already dense (threads running at once never share one, values start at 0): no remap, only
            // a mask, in case a CPU quota lets more threads run than ProcessorCount says.
            int cid = Volatile.Read(ref *(int*)(Libc.PthreadSelf() + s_rseqField));
            return (cid >= 0 ? cid : ReadOther((int)ProcessorIdStrategy.CurrentProcessorId)) & s_slotMask;
        }

        return s_map.Map(GetCurrentId());
    }

    /// <summary>
    /// The raw id of the active strategy: a CPU number, an rseq concurrency id, or (last resort) a managed thread id.
    /// Never negative. May be stale by the time the caller uses it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int GetCurrentId()
    {
        int active = s_active;
        if (active <= (int)ProcessorIdStrategy.RseqCpuId)
        {
            // No thread-static cache: on .NET 10 a thread-static read here compiled to a helper call (about 4 ns,
            // seen in DOTNET_JitDisasm output), while pthread_self() is one load from %fs in glibc. A thread whose
            // rseq registration failed reads a negative cpu_id and takes the fallback.
            int id = Volatile.Read(ref *(int*)(Libc.PthreadSelf() + s_rseqField));
            return id >= 0 ? id : Thread.GetCurrentProcessorId() & int.MaxValue;
        }

        return ReadOther(active);
    }

    /// <summary>
    /// Switches to <paramref name="strategy"/> if it is available on this machine (or re-runs the automatic choice
    /// for <see cref="ProcessorIdStrategy.Auto"/>). Safe to call while other threads write: they may use either
    /// strategy for a moment, which affects only contention, never results.
    /// </summary>
    /// <param name="strategy">The strategy to use.</param>
    /// <param name="reason">Why the strategy was refused, or null.</param>
    /// <returns>Whether the strategy is now active.</returns>
    public static bool TrySetStrategy(ProcessorIdStrategy strategy, out string? reason)
    {
        if (!Enum.IsDefined(strategy))
        {
            throw new ArgumentOutOfRangeException(nameof(strategy), strategy, "Unknown processor id strategy.");
        }

        ProcessorIdSelection selection = s_ladder.Select(strategy, forcedBy: "the API");
        Activate(selection);
        if (strategy == ProcessorIdStrategy.Auto || selection.Strategy == strategy)
        {
            reason = null;
            return true;
        }

        reason = selection.Reason;
        return false;
    }

    /// <summary>Whether <paramref name="strategy"/> passed detection and validation on this machine.</summary>
    /// <param name="strategy">The strategy.</param>
    /// <param name="detail">What detection found.</param>
    /// <returns>False, with a detail that says so, for a value that is not a defined strategy.</returns>
    public static bool IsAvailable(ProcessorIdStrategy strategy, out string detail)
    {
        if (!Enum.IsDefined(strategy))
        {
            detail = $"{(int)strategy} is not a {nameof(ProcessorIdStrategy)}";
            return false;
        }

        return s_ladder.IsAvailable(strategy, out detail);
    }

    /// <summary>Reads the raw id through <paramref name="strategy"/> regardless of the active one (tests, benchmarks).</summary>
    internal static int ReadWith(ProcessorIdStrategy strategy) => s_ladder.Read(strategy);

    /// <summary>
    /// How many CPUs this process's threads can run on: the larger of <see cref="Environment.ProcessorCount"/> and the
    /// CPUs in the affinity mask (<c>sched_getaffinity</c>, up to 8192 CPUs). A cgroup CPU quota (<c>--cpus=2</c> on a
    /// 64-core host) lowers <see cref="Environment.ProcessorCount"/>, as does <c>DOTNET_PROCESSOR_COUNT</c>, but the
    /// threads still run on every CPU of the mask: sized from the quota, all those CPUs would share a few slots and
    /// contend again.
    /// </summary>
    internal static int UsableCpuCount => s_usableCpus;

    private static unsafe int CountUsableCpus()
    {
        int count = Environment.ProcessorCount;
        if (!OperatingSystem.IsLinux())
        {
            return count;
        }

        try
        {
            const int Bytes = 1024; // 8192 CPUs
            byte* mask = stackalloc byte[Bytes];
            new Span<byte>(mask, Bytes).Clear();
            if (Libc.SchedGetAffinity(0, Bytes, mask) == 0)
            {
                int inMask = 0;
                for (int i = 0; i < Bytes; i += sizeof(ulong))
                {
                    inMask += BitOperations.PopCount(*(ulong*)(mask + i));
                }

                return Math.Max(count, inMask);
            }
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
        }

        return count;
    }

    internal static int ComputeSlotCount(int processorCount) =>
        (int)Math.Min(BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, processorCount)), CpuSlotMap.DenseIdLimit);

    private static ProcessorIdStrategy Initialize()
    {
        ProcessorIdStrategy requested = ProcessorIdStrategy.Auto;
        string? env = Environment.GetEnvironmentVariable(EnvironmentVariable);
        string? envProblem = null;
        if (!string.IsNullOrWhiteSpace(env) && !TryParseName(env.Trim(), out requested))
        {
            envProblem = $"{EnvironmentVariable}='{env}' is not a strategy name ({string.Join(", ", Enum.GetNames<ProcessorIdStrategy>())}); chose automatically";
            requested = ProcessorIdStrategy.Auto;
        }

        ProcessorIdSelection selection = s_ladder.Select(requested, forcedBy: EnvironmentVariable);
        if (envProblem is not null)
        {
            selection = selection with { Reason = envProblem + "; " + selection.Reason };
        }

        s_rseqField = s_ladder.RseqFieldOffset(selection.Strategy);
        s_selection = selection;
        return selection.Strategy;
    }

    /// <summary>A strategy by its name only (see <see cref="EnumNames.TryParse{TEnum}"/>).</summary>
    internal static bool TryParseName(string text, out ProcessorIdStrategy strategy) => EnumNames.TryParse(text, out strategy);

    private static void Activate(ProcessorIdSelection selection)
    {
        Volatile.Write(ref s_rseqField, s_ladder.RseqFieldOffset(selection.Strategy));
        Volatile.Write(ref s_selection, selection);
        Volatile.Write(ref s_active, (int)selection.Strategy);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ReadOther(int active)
    {
        switch (active)
        {
            case (int)ProcessorIdStrategy.Rdpid:
                return (int)(((delegate* unmanaged[SuppressGCTransition]<uint>)s_ladder.RdpidStub)() & TscAuxCpuMask);
            case (int)ProcessorIdStrategy.Rdtscp:
                return (int)(((delegate* unmanaged[SuppressGCTransition]<uint>)s_ladder.RdtscpStub)() & TscAuxCpuMask);
            case (int)ProcessorIdStrategy.SchedGetCpu:
                int cpu = Libc.SchedGetCpu();
                return cpu >= 0 ? cpu : Thread.GetCurrentProcessorId() & int.MaxValue;
            case (int)ProcessorIdStrategy.CurrentProcessorId:
                return Thread.GetCurrentProcessorId() & int.MaxValue;
            case (int)ProcessorIdStrategy.CachedCpuId:
                return CachedCpuId.Read();
            default:
                return Environment.CurrentManagedThreadId;
        }
    }
}
