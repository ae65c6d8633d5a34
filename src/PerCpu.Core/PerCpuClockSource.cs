namespace PerCpu;

/// <summary>Where <see cref="PerCpuClock"/> takes its timestamps from.</summary>
public enum PerCpuClockSource
{
    /// <summary>Choose at startup: <see cref="Rdtsc"/> where it is available, validated and cheaper, else <see cref="Stopwatch"/>.</summary>
    Auto = 0,

    /// <summary><see cref="System.Diagnostics.Stopwatch.GetTimestamp"/> (on Linux, <c>clock_gettime(CLOCK_MONOTONIC)</c>).</summary>
    Stopwatch = 1,

    /// <summary>
    /// The CPU's time-stamp counter read with <c>RDTSC</c>, calibrated against <see cref="System.Diagnostics.Stopwatch"/> at
    /// startup: only on x86-64 Linux where the kernel's clocksource is <c>tsc</c> (the kernel found the counter invariant
    /// and synchronized across CPUs) and a check across every CPU of the process agreed with the Stopwatch.
    /// </summary>
    Rdtsc = 2,
}
