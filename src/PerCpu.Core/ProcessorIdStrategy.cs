namespace PerCpu;

/// <summary>
/// How <see cref="ProcessorId"/> learns which CPU the calling thread runs on. Listed in the order of the
/// startup ladder: each is detected and validated; among those that pass, the fastest measured one is used.
/// </summary>
public enum ProcessorIdStrategy
{
    /// <summary>Detect, validate and measure every strategy at startup and use the fastest correct one.</summary>
    Auto = 0,

    /// <summary>
    /// Linux x64 with glibc 2.35 or later: the kernel's compact per-process concurrency id (<c>mm_cid</c>) read from
    /// the thread's restartable-sequences area. Dense: threads running at the same moment never share a value.
    /// </summary>
    RseqMmCid = 1,

    /// <summary>Linux x64 with glibc 2.35 or later: <c>cpu_id</c> read from the thread's restartable-sequences area.</summary>
    RseqCpuId = 2,

    /// <summary>x86-64 Linux: the <c>RDPID</c> instruction (low 12 bits of TSC_AUX), executed from a small read+execute stub.</summary>
    Rdpid = 3,

    /// <summary>x86-64 Linux: the <c>RDTSCP</c> instruction (low 12 bits of TSC_AUX). Serializing and often slow under virtualization.</summary>
    Rdtscp = 4,

    /// <summary>Linux: glibc's <c>sched_getcpu</c> called without a GC transition.</summary>
    SchedGetCpu = 5,

    /// <summary>Any OS: <see cref="Thread.GetCurrentProcessorId"/>.</summary>
    CurrentProcessorId = 6,

    /// <summary>Last resort: a stripe chosen by <see cref="Environment.CurrentManagedThreadId"/>. Not a CPU at all.</summary>
    ManagedThreadId = 7,

    /// <summary>
    /// Linux: <c>sched_getcpu</c> once every 64 reads per thread, the id cached in between (as Folly's AccessSpreader
    /// does). A stale id after a migration costs only contention, never results. Chosen only where it costs less than
    /// half the cheapest exact strategy: without rseq and RDPID, where <c>sched_getcpu</c> is a slow vDSO call.
    /// </summary>
    CachedCpuId = 8,
}
