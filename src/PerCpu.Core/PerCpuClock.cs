using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PerCpu.Internal;

namespace PerCpu;

/// <summary>
/// Timestamps for durations, from the cheapest source that is correct on this machine: the CPU's time-stamp counter
/// (<see cref="PerCpuClockSource.Rdtsc"/>) where the kernel itself keeps time with it, else
/// <see cref="Stopwatch.GetTimestamp"/>. Detected, calibrated, validated and measured once, on first use, as
/// <see cref="ProcessorId"/> chooses its strategy.
/// </summary>
/// <remarks>
/// <para>
/// <see cref="PerCpuClockSource.Rdtsc"/> is available only on x86-64 Linux whose current clocksource is <c>tsc</c>: the
/// kernel chose it because the counter is invariant (constant rate through frequency and sleep states) and
/// synchronized across CPUs, and its watchdog would have switched away from it otherwise. On top of that, PerCpu
/// calibrates the counter against the Stopwatch over about 10 ms, then pins its thread to every CPU the process may
/// run on in turn and checks that the counter never runs backwards from one CPU to the next and agrees with the
/// Stopwatch there: a request that starts on one CPU and ends on another measures right. Any failure leaves the
/// Stopwatch, with the reason in <see cref="Detail"/>.
/// </para>
/// <para>
/// The environment variable <c>PERCPU_CLOCK</c> (<c>auto</c>, <c>stopwatch</c>, <c>rdtsc</c>; case-insensitive) sets the
/// process default, read once; an unknown value, or <c>rdtsc</c> where it is unavailable, falls back and says so in
/// <see cref="Detail"/>. A timestamp is only meaningful with the source that made it: read both ends of a duration with
/// the same <see cref="PerCpuClockSource"/> (the one <see cref="Resolve"/> returned).
/// </para>
/// <para>
/// Thread safety: every property is fixed once the class is initialized (detection, calibration and measurement run
/// once, in its static constructor), so any thread reads the same values, and nothing switches the source of a
/// duration while it is being measured. <see cref="GetTimestamp"/> and <see cref="GetElapsedStopwatchTicks"/> take no
/// lock and allocate nothing.
/// </para>
/// </remarks>
public static unsafe class PerCpuClock
{
    /// <summary>The environment variable that sets the default source.</summary>
    public const string EnvironmentVariable = "PERCPU_CLOCK";

    /// <summary>The most CPUs the cross-CPU check visits (it stays a few milliseconds on very large machines).</summary>
    private const int MaxCheckedCpus = 256;

    // rdtsc; shl rdx, 32; or rax, rdx; ret
    private static readonly byte[] s_rdtscCode = [0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0xC3];

    private static readonly nint s_stub;
    private static readonly bool s_tscAvailable; // static readonly: the JIT folds the checks below in optimized code
    private static readonly double s_stopwatchTicksPerTsc;
    private static readonly string s_tscDetail;

    static PerCpuClock()
    {
        (s_stub, s_stopwatchTicksPerTsc, s_tscDetail) = DetectTsc();
        s_tscAvailable = s_stub != 0;
        TscFrequency = s_tscAvailable ? Stopwatch.Frequency / s_stopwatchTicksPerTsc : double.NaN;
        (StopwatchNanoseconds, RdtscNanoseconds) = MeasureNanoseconds();

        string? env = Environment.GetEnvironmentVariable(EnvironmentVariable);
        PerCpuClockSource requested = PerCpuClockSource.Auto;
        string? envProblem = null;
        if (!string.IsNullOrWhiteSpace(env) && !EnumNames.TryParse(env.Trim(), out requested))
        {
            envProblem = $"{EnvironmentVariable}='{env}' is not a clock source ({string.Join(", ", Enum.GetNames<PerCpuClockSource>())}); chose automatically. ";
        }

        Source = ResolveCore(requested, EnvironmentVariable, out string reason);
        Detail = envProblem + reason;
    }

    /// <summary>The process default: what <see cref="PerCpuClockSource.Auto"/> resolves to.</summary>
    public static PerCpuClockSource Source { get; }

    /// <summary>One sentence for logs: why <see cref="Source"/>, what the check of the time-stamp counter found, and the measured costs.</summary>
    public static string Detail { get; }

    /// <summary>The calibrated time-stamp counter rate in Hz, or <see cref="double.NaN"/> where <see cref="PerCpuClockSource.Rdtsc"/> is unavailable.</summary>
    public static double TscFrequency { get; }

    /// <summary>Measured cost of one <see cref="Stopwatch.GetTimestamp"/> at startup (best of several rounds), in ns.</summary>
    public static double StopwatchNanoseconds { get; }

    /// <summary>Measured cost of one counter read at startup, in ns, or <see cref="double.NaN"/> where unavailable.</summary>
    public static double RdtscNanoseconds { get; }

    /// <summary>Whether <paramref name="source"/> can be used here; <paramref name="reason"/> says why not, or what was checked.</summary>
    public static bool IsAvailable(PerCpuClockSource source, out string reason)
    {
        switch (source)
        {
            case PerCpuClockSource.Auto:
            case PerCpuClockSource.Stopwatch:
                reason = source == PerCpuClockSource.Auto ? "chooses among the others" : "always available";
                return true;
            case PerCpuClockSource.Rdtsc:
                reason = s_tscDetail;
                return s_tscAvailable;
            default:
                reason = $"{(int)source} is not a {nameof(PerCpuClockSource)}";
                return false;
        }
    }

    /// <summary>
    /// The source to use for <paramref name="requested"/>: <see cref="PerCpuClockSource.Auto"/> is <see cref="Source"/>;
    /// an unavailable or undefined source falls back to <see cref="PerCpuClockSource.Stopwatch"/>, and
    /// <paramref name="reason"/> says so. Never <see cref="PerCpuClockSource.Auto"/>.
    /// </summary>
    public static PerCpuClockSource Resolve(PerCpuClockSource requested, out string reason)
    {
        if (requested == PerCpuClockSource.Auto)
        {
            reason = Detail;
            return Source;
        }

        return ResolveCore(requested, "the option", out reason);
    }

    /// <summary>A timestamp of <paramref name="source"/> (a value <see cref="Resolve"/> returned).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long GetTimestamp(PerCpuClockSource source) =>
        source == PerCpuClockSource.Rdtsc && s_tscAvailable ? ((delegate* unmanaged[SuppressGCTransition]<long>)s_stub)() : Stopwatch.GetTimestamp();

    /// <summary>
    /// The time since <paramref name="start"/> (a <see cref="GetTimestamp"/> of the same <paramref name="source"/>) in
    /// <see cref="Stopwatch"/> ticks, as <c>PerCpuHistogram.RecordTicks</c> takes them. Negative only if the source
    /// ran backwards, which the histogram counts as invalid rather than dropping.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long GetElapsedStopwatchTicks(PerCpuClockSource source, long start) =>
        source == PerCpuClockSource.Rdtsc && s_tscAvailable
            ? (long)((((delegate* unmanaged[SuppressGCTransition]<long>)s_stub)() - start) * s_stopwatchTicksPerTsc)
            : Stopwatch.GetTimestamp() - start;

    private static PerCpuClockSource ResolveCore(PerCpuClockSource requested, string forcedBy, out string reason)
    {
        string costs = string.Create(CultureInfo.InvariantCulture, $"Stopwatch {StopwatchNanoseconds:0.0} ns, RDTSC {(s_tscAvailable ? RdtscNanoseconds.ToString("0.0", CultureInfo.InvariantCulture) + " ns" : "-")}");
        switch (requested)
        {
            case PerCpuClockSource.Stopwatch:
                reason = $"forced by {forcedBy} ({costs})";
                return PerCpuClockSource.Stopwatch;
            case PerCpuClockSource.Rdtsc when s_tscAvailable:
                reason = $"forced by {forcedBy}: {s_tscDetail} ({costs})";
                return PerCpuClockSource.Rdtsc;
            case PerCpuClockSource.Rdtsc:
                reason = $"Rdtsc forced by {forcedBy} is unavailable ({s_tscDetail}); fell back to Stopwatch";
                return PerCpuClockSource.Stopwatch;
            case PerCpuClockSource.Auto when s_tscAvailable && RdtscNanoseconds < StopwatchNanoseconds:
                reason = $"the cheaper ({costs}); {s_tscDetail}";
                return PerCpuClockSource.Rdtsc;
            case PerCpuClockSource.Auto:
                reason = s_tscAvailable ? $"the cheaper ({costs})" : $"RDTSC unavailable: {s_tscDetail}";
                return PerCpuClockSource.Stopwatch;
            default:
                reason = $"{(int)requested} is not a {nameof(PerCpuClockSource)}; fell back to Stopwatch";
                return PerCpuClockSource.Stopwatch;
        }
    }

    private static (nint Stub, double StopwatchTicksPerTsc, string Detail) DetectTsc()
    {
        try
        {
            if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            {
                return (0, 0, "x86-64 Linux only");
            }

            const string clocksourcePath = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
            string clocksource = File.Exists(clocksourcePath) ? File.ReadAllText(clocksourcePath).Trim() : "(unreadable)";
            if (clocksource != "tsc")
            {
                return (0, 0, $"the kernel's clocksource is {clocksource}, not tsc");
            }

            nint stub = ExecutableMemory.Create((page, _) => s_rdtscCode.CopyTo(page), out string? refusal);
            if (stub == 0)
            {
                return (0, 0, refusal!);
            }

            var read = (delegate* unmanaged[SuppressGCTransition]<long>)stub;
            (long tsc0, long sw0) = Pair(read);
            Thread.Sleep(10);
            (long tsc1, long sw1) = Pair(read);
            double perTsc = (double)(sw1 - sw0) / (tsc1 - tsc0);
            double hz = Stopwatch.Frequency / perTsc;
            if (!(hz > 50e6 && hz < 20e9))
            {
                return (0, 0, string.Create(CultureInfo.InvariantCulture, $"calibration gave an implausible {hz / 1e6:0} MHz"));
            }

            string? crossCpu = CheckAcrossCpus(read, perTsc, out int checkedCpus);
            if (crossCpu is not null && checkedCpus >= 0)
            {
                return (0, 0, crossCpu);
            }

            string checkedText = checkedCpus >= 0 ? $"agreed with Stopwatch across {checkedCpus} CPUs" : crossCpu!;
            return (stub, perTsc, string.Create(CultureInfo.InvariantCulture, $"clocksource tsc, {hz / 1e6:0.000} MHz calibrated, {checkedText}"));
        }
        catch (Exception ex)
        {
            return (0, 0, $"detection failed: {ex.GetType().Name}: {ex.Message}");
        }
    }

    /// <summary>A counter reading and the Stopwatch time it was taken at: the tightest of a few brackets.</summary>
    private static (long Tsc, long Stopwatch) Pair(delegate* unmanaged[SuppressGCTransition]<long> read)
    {
        long best = long.MaxValue, tsc = 0, sw = 0;
        for (int i = 0; i < 16; i++)
        {
            long before = Stopwatch.GetTimestamp();
            long t = read();
            long after = Stopwatch.GetTimestamp();
            if (after - before < best)
            {
                best = after - before;
                tsc = t;
                sw = before + ((after - before) / 2);
            }
        }

        return (tsc, sw);
    }

    /// <summary>
    /// Pins this thread to each CPU of its affinity mask in turn, and checks that the counter went forward from one CPU
    /// to the next by what the Stopwatch saw (within 20 us). Null when it did; <paramref name="checkedCpus"/> is -1 when
    /// the thread could not be pinned (the message says so, and the kernel's own validation stands).
    /// </summary>
    private static string? CheckAcrossCpus(delegate* unmanaged[SuppressGCTransition]<long> read, double perTsc, out int checkedCpus)
    {
        const int maskBytes = 512; // 4096 CPUs
        byte* original = stackalloc byte[maskBytes];
        byte* one = stackalloc byte[maskBytes];
        if (Libc.SchedGetAffinity(0, maskBytes, original) != 0)
        {
            checkedCpus = -1;
            return "not checked across CPUs (sched_getaffinity failed)";
        }

        long toleranceTicks = Stopwatch.Frequency / 50_000; // 20 us
        checkedCpus = 0;
        try
        {
            (long Tsc, long Stopwatch) previous = default;
            for (int cpu = 0; cpu < maskBytes * 8 && checkedCpus < MaxCheckedCpus; cpu++)
            {
                if ((original[cpu >> 3] & (1 << (cpu & 7))) == 0)
                {
                    continue;
                }

                new Span<byte>(one, maskBytes).Clear();
                one[cpu >> 3] = (byte)(1 << (cpu & 7));
                if (Libc.SchedSetAffinity(0, maskBytes, one) != 0)
                {
                    checkedCpus = -1;
                    return $"not checked across CPUs (sched_setaffinity refused, errno {Marshal.GetLastPInvokeError()})";
                }

                (long Tsc, long Stopwatch) now = Pair(read);
                if (checkedCpus > 0)
                {
                    long byTsc = (long)((now.Tsc - previous.Tsc) * perTsc);
                    long byStopwatch = now.Stopwatch - previous.Stopwatch;
                    if (now.Tsc <= previous.Tsc || Math.Abs(byTsc - byStopwatch) > toleranceTicks)
                    {
                        return string.Create(CultureInfo.InvariantCulture, $"the counter disagreed with Stopwatch moving to CPU {cpu}: {byTsc} against {byStopwatch} ticks");
                    }
                }

                previous = now;
                checkedCpus++;
            }

            return null;
        }
        finally
        {
            _ = Libc.SchedSetAffinity(0, maskBytes, original);
        }
    }

    /// <summary>
    /// The best ns per call of each source over rounds that alternate between them, so that what else the machine does
    /// at startup (the JIT, other threads) falls on both alike; NaN for the counter where it is unavailable.
    /// </summary>
    private static (double Stopwatch, double Rdtsc) MeasureNanoseconds()
    {
        double stopwatch = double.MaxValue, rdtsc = s_tscAvailable ? double.MaxValue : double.NaN;
        for (int round = 0; round < 32; round++)
        {
            stopwatch = Math.Min(stopwatch, Round(PerCpuClockSource.Stopwatch));
            if (s_tscAvailable)
            {
                rdtsc = Math.Min(rdtsc, Round(PerCpuClockSource.Rdtsc));
            }
        }

        return (stopwatch, rdtsc);

        // Optimized from the first call (no tier-0 code): the loop costs what a request's reads cost, not the JIT's.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        static double Round(PerCpuClockSource source)
        {
            const int calls = 1024;
            long sink = 0;
            long start = Stopwatch.GetTimestamp();
            for (int i = 0; i < calls; i++)
            {
                sink += GetTimestamp(source);
            }

            double ns = Stopwatch.GetElapsedTime(start).TotalNanoseconds / calls;
            GC.KeepAlive(sink);
            return ns;
        }
    }
}
