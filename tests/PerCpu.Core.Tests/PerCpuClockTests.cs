using System.Diagnostics;
using System.Numerics;

namespace PerCpu.Tests;

/// <summary>
/// The clock ladder: the time-stamp counter, where it is chosen, measures what the Stopwatch measures, also for a
/// duration that starts on one CPU and ends on another; the environment variable and the option fall back and say so.
/// </summary>
[Trait(Traits.Category, Traits.Core)]
public sealed class PerCpuClockTests(ITestOutputHelper output)
{
    /// <summary>Agreement asked of two clocks over one interval: 0.2% of it, plus 50 us for the reads around it.</summary>
    private static long Tolerance(long stopwatchTicks) => (stopwatchTicks / 500) + (Stopwatch.Frequency / 20_000);

    [Fact]
    public void Selection_IsReported_AndAutoResolvesToTheProcessDefault()
    {
        output.WriteLine($"{PerCpuClock.Source}: {PerCpuClock.Detail}");
        if (Environment.GetEnvironmentVariable(PerCpuClock.EnvironmentVariable) is { Length: > 0 } forced)
        {
            Assert.Skip($"{PerCpuClock.EnvironmentVariable}={forced} in this process");
        }

        Assert.NotEqual(PerCpuClockSource.Auto, PerCpuClock.Source);
        Assert.False(string.IsNullOrWhiteSpace(PerCpuClock.Detail));
        Assert.Equal(PerCpuClock.Source, PerCpuClock.Resolve(PerCpuClockSource.Auto, out string reason));
        Assert.Equal(PerCpuClock.Detail, reason);
        Assert.True(PerCpuClock.StopwatchNanoseconds > 0);
        bool tsc = PerCpuClock.IsAvailable(PerCpuClockSource.Rdtsc, out string detail);
        Assert.Equal(tsc, !double.IsNaN(PerCpuClock.TscFrequency));
        Assert.Equal(tsc, !double.IsNaN(PerCpuClock.RdtscNanoseconds));
        if (tsc)
        {
            // Chosen by measurement: the counter only where it was the cheaper.
            Assert.Equal(PerCpuClock.RdtscNanoseconds < PerCpuClock.StopwatchNanoseconds, PerCpuClock.Source == PerCpuClockSource.Rdtsc);
            Assert.Contains("clocksource tsc", detail, StringComparison.Ordinal);
        }
        else
        {
            Assert.Equal(PerCpuClockSource.Stopwatch, PerCpuClock.Source);
        }
    }

    [Theory]
    [InlineData(42)]
    [InlineData(-1)]
    public void Resolve_UndefinedSource_FallsBackToStopwatchAndSaysSo(int value)
    {
        Assert.False(PerCpuClock.IsAvailable((PerCpuClockSource)value, out string detail));
        Assert.Contains("is not a PerCpuClockSource", detail, StringComparison.Ordinal);
        Assert.Equal(PerCpuClockSource.Stopwatch, PerCpuClock.Resolve((PerCpuClockSource)value, out string reason));
        Assert.Contains("fell back to Stopwatch", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Resolve_Rdtsc_IsTheCounterWhereAvailable_ElseStopwatchWithTheReason()
    {
        PerCpuClockSource resolved = PerCpuClock.Resolve(PerCpuClockSource.Rdtsc, out string reason);
        if (PerCpuClock.IsAvailable(PerCpuClockSource.Rdtsc, out string detail))
        {
            Assert.Equal(PerCpuClockSource.Rdtsc, resolved);
        }
        else
        {
            Assert.Equal(PerCpuClockSource.Stopwatch, resolved);
            Assert.Contains("unavailable", reason, StringComparison.Ordinal);
            Assert.Contains(detail, reason, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData(PerCpuClockSource.Stopwatch)]
    [InlineData(PerCpuClockSource.Rdtsc)]
    public void Elapsed_OverASleep_AgreesWithTheStopwatch(PerCpuClockSource source)
    {
        SkipUnlessAvailable(source);
        for (int i = 0; i < 5; i++)
        {
            long outerStart = Stopwatch.GetTimestamp();
            long start = PerCpuClock.GetTimestamp(source);
            Thread.Sleep(30);
            long elapsed = PerCpuClock.GetElapsedStopwatchTicks(source, start);
            long outer = Stopwatch.GetTimestamp() - outerStart;
            Assert.InRange(elapsed, outer - Tolerance(outer), outer + Tolerance(outer));
        }
    }

    /// <summary>
    /// Durations whose two ends are read on different CPUs (the thread is pinned to one CPU, then the next), from many
    /// more threads than cores: each agrees with the Stopwatch read around it, and none is negative.
    /// </summary>
    [Fact]
    public void Rdtsc_DurationThatMovesBetweenCpus_MeasuresRight_UnderManyThreads()
    {
        SkipUnlessAvailable(PerCpuClockSource.Rdtsc);
        ulong allowed = 0;
        if (SchedAffinity.Get(ref allowed) != 0 || BitOperations.PopCount(allowed) < 2)
        {
            Assert.Skip("needs two CPUs in the affinity mask");
        }

        int[] cpus = [.. Enumerable.Range(0, 64).Where(c => (allowed & (1UL << c)) != 0)];
        int threads = Math.Max(16, Environment.ProcessorCount * 8);
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        long measured = 0;
        Thread[] workers = [.. Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            for (int i = 0; i < 200; i++)
            {
                ulong from = 1UL << cpus[(t + i) % cpus.Length];
                ulong to = 1UL << cpus[(t + i + 1) % cpus.Length];
                if (SchedAffinity.Set(ref from) != 0)
                {
                    failures.Enqueue("sched_setaffinity failed");
                    return;
                }

                long outerStart = Stopwatch.GetTimestamp();
                long start = PerCpuClock.GetTimestamp(PerCpuClockSource.Rdtsc);
                _ = SchedAffinity.Set(ref to); // the kernel moves the thread before the call returns
                Thread.SpinWait(50 * (i % 8));
                long elapsed = PerCpuClock.GetElapsedStopwatchTicks(PerCpuClockSource.Rdtsc, start);
                long outer = Stopwatch.GetTimestamp() - outerStart;
                if (elapsed < 0 || elapsed > outer + Tolerance(outer))
                {
                    failures.Enqueue($"thread {t} round {i}: {elapsed} ticks by the counter within {outer} by the Stopwatch");
                }

                Interlocked.Increment(ref measured);
            }

            ulong all = allowed;
            _ = SchedAffinity.Set(ref all);
        }))];
        foreach (Thread w in workers)
        {
            w.Start();
        }

        foreach (Thread w in workers)
        {
            w.Join();
        }

        Assert.Empty(failures);
        Assert.Equal(threads * 200L, measured);
    }

    [Theory]
    [InlineData("stopwatch", "Stopwatch")]
    [InlineData("RDTSC", "Rdtsc")]
    [InlineData("auto", null)]
    public void ChildProcess_EnvironmentVariable_SetsTheDefault(string value, string? expected)
    {
        string? reason = null;
        if (expected == "Rdtsc" && !PerCpuClock.IsAvailable(PerCpuClockSource.Rdtsc, out _))
        {
            expected = "Stopwatch";
            reason = "unavailable";
        }

        var env = new Dictionary<string, string> { [PerCpuClock.EnvironmentVariable] = value, ["PERCPU_EXPECT_CLOCK"] = expected ?? "defined" };
        if (reason is not null)
        {
            env["PERCPU_EXPECT_CLOCK_REASON"] = reason;
        }

        ChildRun.Result r = ChildRun.Run(env, "-method", $"{typeof(ChildProcessProbe).FullName}.{nameof(ChildProcessProbe.ReportsExpectations)}");
        Assert.True(r.ExitCode == 0 && r.Failed == 0 && r.Total == 1, r.Output);
        Assert.Contains("EXPECT_CLOCK verified", r.Output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("tsc")]
    [InlineData("2")] // a number, which Enum.TryParse would take
    [InlineData("Stopwatch, Rdtsc")] // a comma list, which Enum.TryParse would OR
    public void ChildProcess_BadEnvironmentVariable_ChoosesAutomaticallyAndSaysWhy(string value)
    {
        ChildRun.Result r = ChildRun.Run(
            new Dictionary<string, string> { [PerCpuClock.EnvironmentVariable] = value, ["PERCPU_EXPECT_CLOCK"] = "defined", ["PERCPU_EXPECT_CLOCK_REASON"] = "is not a clock source" },
            "-method", $"{typeof(ChildProcessProbe).FullName}.{nameof(ChildProcessProbe.ReportsExpectations)}");
        Assert.True(r.ExitCode == 0 && r.Failed == 0 && r.Total == 1, r.Output);
        Assert.Contains("EXPECT_CLOCK verified", r.Output, StringComparison.Ordinal);
    }

    private static void SkipUnlessAvailable(PerCpuClockSource source)
    {
        if (!PerCpuClock.IsAvailable(source, out string detail))
        {
            Assert.Skip($"{source} is unavailable here: {detail}");
        }
    }
}
