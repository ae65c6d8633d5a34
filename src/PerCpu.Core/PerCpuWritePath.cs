namespace PerCpu;

/// <summary>How PerCpu instruments write their per-CPU cells (<see cref="ProcessorId.WritePath"/>).</summary>
public enum PerCpuWritePath
{
    /// <summary>One uncontended interlocked operation (a <c>lock</c>-prefixed instruction) on the current CPU's cell.</summary>
    Interlocked,

    /// <summary>
    /// A Linux restartable sequence: the cell of the thread's rseq <c>mm_cid</c> and a single plain commit instruction,
    /// which the kernel restarts when the thread is preempted, migrated or signalled first. No <c>lock</c> prefix.
    /// </summary>
    Rseq,
}
