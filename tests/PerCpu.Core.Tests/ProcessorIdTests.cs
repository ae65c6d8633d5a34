using System.Runtime.CompilerServices;
using PerCpu.Internal;

namespace PerCpu.Tests;

[Collection(GlobalStrategyCollection.Name)]
public sealed class ProcessorIdTests
{
    public static TheoryData<ProcessorIdStrategy> CpuStrategies => new()
    {
        ProcessorIdStrategy.RseqCpuId,
        ProcessorIdStrategy.Rdpid,
        ProcessorIdStrategy.Rdtscp,
        ProcessorIdStrategy.SchedGetCpu,
        ProcessorIdStrategy.CurrentProcessorId,
    };

    public static TheoryData<ProcessorIdStrategy> AllStrategies => new()
    {
        ProcessorIdStrategy.RseqMmCid,
        ProcessorIdStrategy.RseqCpuId,
        ProcessorIdStrategy.Rdpid,
        ProcessorIdStrategy.Rdtscp,
        ProcessorIdStrategy.SchedGetCpu,
        ProcessorIdStrategy.CurrentProcessorId,
        ProcessorIdStrategy.ManagedThreadId,
        ProcessorIdStrategy.CachedCpuId,
    };

    [Fact]
    [Trait(Traits.Category, Traits.Core)]
    public void Selection_ReportsEveryRungAndAnAvailableChoice()
    {
        ProcessorIdSelection selection = ProcessorId.Selection;

        Assert.Equal(8, selection.Candidates.Count);
        ProcessorIdCandidate chosen = Assert.Single(selection.Candidates, c => c.Strategy == selection.Strategy);
        Assert.True(chosen.Available);
        Assert.False(string.IsNullOrWhiteSpace(selection.Reason));
        Assert.All(selection.Candidates, c => Assert.False(string.IsNullOrWhiteSpace(c.Detail)));
        Assert.All(selection.Candidates.Where(c => c.Available), c => Assert.True(c.NanosecondsPerCall > 0));
        Assert.Contains(selection.Strategy.ToString(), selection.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    [Trait(Traits.Category, Traits.Core)]
    public void AutomaticChoice_IsNeverSlowerThanTieFactorTimesTheBestCpuStrategy()
    {
        ProcessorIdSelection selection = ProcessorId.Selection;
        if (selection.Reason.Contains("forced", StringComparison.Ordinal))
        {
            Assert.Skip("a strategy is forced in this process: " + selection.Reason);
        }

        double best = selection.Candidates
            .Where(c => c.Available && c.Strategy is not ProcessorIdStrategy.ManagedThreadId and not ProcessorIdStrategy.CachedCpuId)
            .Min(c => c.NanosecondsPerCall);
        ProcessorIdCandidate chosen = selection.Candidates.Single(c => c.Strategy == selection.Strategy);

        Assert.NotEqual(ProcessorIdStrategy.ManagedThreadId, selection.Strategy);
        if (selection.Strategy == ProcessorIdStrategy.CachedCpuId)
        {
            Assert.True(chosen.NanosecondsPerCall * 2 < best, selection.ToString()); // only where it halves the cost
        }
        else
        {
            Assert.True(chosen.NanosecondsPerCall <= best * ProcessorIdLadder.TieFactor, selection.ToString());
        }
    }

    /// <summary>
    /// The cached id follows a migration within <see cref="CachedCpuId.RefreshEvery"/> reads: pinned to one CPU, then to
    /// another, the thread reports the new CPU after at most that many reads.
    /// </summary>
    [Fact]
    [Trait(Traits.Category, Traits.Core)]
    public void CachedCpuId_FollowsAMigrationWithinItsRefreshInterval()
    {
        SkipUnlessAvailable(ProcessorIdStrategy.CachedCpuId);
        ulong allowed = 0;
        if (SchedAffinity.Get(ref allowed) != 0 || System.Numerics.BitOperations.PopCount(allowed) < 2)
        {
            Assert.Skip("needs two CPUs in the affinity mask");
        }

        int first = System.Numerics.BitOperations.TrailingZeroCount(allowed);
        int second = System.Numerics.BitOperations.TrailingZeroCount(allowed & ~(1UL << first));
        int[] seen = new int[2];
        var t = new Thread(() =>
        {
            foreach ((int cpu, int index) in new[] { (first, 0), (second, 1) })
            {
                ulong mask = 1UL << cpu;
                Assert.Equal(0, SchedAffinity.Set(ref mask));
                for (int i = 0; i <= CachedCpuId.RefreshEvery; i++)
                {
                    seen[index] = CachedCpuId.Read();
                }
            }
        });
        t.Start();
        t.Join();
        Assert.Equal([first, second], seen);
    }

    [Theory]
    [MemberData(nameof(CpuStrategies))]
    [Trait(Traits.Category, Traits.Core)]
    public void Strategy_WhereAvailable_AgreesWithTheOs(ProcessorIdStrategy strategy)
    {
        SkipUnlessAvailable(strategy);
        SkipUnlessAvailable(ProcessorIdStrategy.SchedGetCpu);

        // Migration between the two reads explains a rare mismatch; a broken read disagrees almost always.
        int agree = 0;
        for (int i = 0; i < 1000; i++)
        {
            int a = ProcessorId.ReadWith(strategy);
            int os = Libc.SchedGetCpu();
            int b = ProcessorId.ReadWith(strategy);
            agree += a == os || b == os ? 1 : 0;
        }

        Assert.True(agree >= 990, $"{strategy} agreed with sched_getcpu on {agree} of 1000 samples");
    }

    [Fact]
    [Trait(Traits.Category, Traits.Core)]
    public void RseqMmCid_WhereAvailable_IsDenseAndDistinctForConcurrentThreads()
    {
        SkipUnlessAvailable(ProcessorIdStrategy.RseqMmCid);

        int id = ProcessorId.ReadWith(ProcessorIdStrategy.RseqMmCid);

        // mm_cid is bounded by the number of threads or allowed CPUs, whichever is smaller.
        Assert.InRange(id, 0, Math.Max(Environment.ProcessorCount, 64));
    }

    [Theory]
    [MemberData(nameof(AllStrategies))]
    public void TrySetStrategy_Available_SwitchesAndSlotsStayInRange(ProcessorIdStrategy strategy)
    {
        SkipUnlessAvailable(strategy);
        try
        {
            Assert.True(ProcessorId.TrySetStrategy(strategy, out string? reason), reason);
            Assert.Equal(strategy, ProcessorId.Strategy);
            Assert.Contains("forced by the API", ProcessorId.Selection.Reason, StringComparison.Ordinal);

            Parallel.For(0, 10_000, _ =>
            {
                Assert.InRange(ProcessorId.GetCurrentSlot(), 0, ProcessorId.SlotCount - 1);
                Assert.True(ProcessorId.GetCurrentId() >= 0);
            });
        }
        finally
        {
            ProcessorId.TrySetStrategy(ProcessorIdStrategy.Auto, out _);
        }
    }

    [Fact]
    public void TrySetStrategy_Unavailable_FallsBackWithReason()
    {
        ProcessorIdStrategy? missing = ProcessorId.Selection.Candidates.FirstOrDefault(c => !c.Available)?.Strategy;
        if (missing is null)
        {
            Assert.Skip("every strategy is available on this machine");
        }

        try
        {
            Assert.False(ProcessorId.TrySetStrategy(missing.Value, out string? reason));
            Assert.NotEqual(missing.Value, ProcessorId.Strategy);
            Assert.Contains("unavailable", reason, StringComparison.Ordinal);
        }
        finally
        {
            ProcessorId.TrySetStrategy(ProcessorIdStrategy.Auto, out _);
        }
    }

    [Fact]
    [Trait(Traits.Category, Traits.Core)]
    public void Ladder_ExecutableMemoryRefused_FallsBackPastTheStubs()
    {
        var ladder = new ProcessorIdLadder(new ProcessorIdLadder.Probe(DenyExecutableMemory: true));

        Assert.False(ladder.IsAvailable(ProcessorIdStrategy.Rdpid, out string rdpid));
        Assert.False(ladder.IsAvailable(ProcessorIdStrategy.Rdtscp, out _));
        ProcessorIdSelection selection = ladder.Select(ProcessorIdStrategy.Rdpid, "test");
        Assert.NotEqual(ProcessorIdStrategy.Rdpid, selection.Strategy);
        Assert.Contains("unavailable", selection.Reason, StringComparison.Ordinal);
        Assert.True(rdpid.Contains("refused", StringComparison.Ordinal) || rdpid.Contains("no RDPID", StringComparison.Ordinal) || rdpid.Contains("needs", StringComparison.Ordinal) || rdpid.Contains("unavailable", StringComparison.Ordinal), rdpid);
    }

    [Fact]
    [Trait(Traits.Category, Traits.Core)]
    public void Ladder_RseqNotRegistered_FallsBackToAnotherCpuStrategy()
    {
        var ladder = new ProcessorIdLadder(new ProcessorIdLadder.Probe(DisableRseq: true));

        Assert.False(ladder.IsAvailable(ProcessorIdStrategy.RseqCpuId, out _));
        Assert.False(ladder.IsAvailable(ProcessorIdStrategy.RseqMmCid, out _));
        ProcessorIdSelection selection = ladder.Select(ProcessorIdStrategy.Auto, "test");
        Assert.DoesNotContain(selection.Strategy, new[] { ProcessorIdStrategy.RseqCpuId, ProcessorIdStrategy.RseqMmCid });
        Assert.NotEqual(ProcessorIdStrategy.ManagedThreadId, selection.Strategy);
    }

    [Fact]
    [Trait(Traits.Category, Traits.Core)]
    public void Ladder_ValidationDisagreesWithOs_RejectsHardwarePaths()
    {
        SkipUnlessAvailable(ProcessorIdStrategy.SchedGetCpu);
        // An OS "answer" that never matches a real CPU number: every validated path must be refused.
        var ladder = new ProcessorIdLadder(new ProcessorIdLadder.Probe(OsReference: static () => 4000));

        foreach (ProcessorIdStrategy s in new[] { ProcessorIdStrategy.RseqCpuId, ProcessorIdStrategy.RseqMmCid, ProcessorIdStrategy.Rdpid, ProcessorIdStrategy.Rdtscp })
        {
            Assert.False(ladder.IsAvailable(s, out string detail), $"{s}: {detail}");
        }

        ProcessorIdSelection selection = ladder.Select(ProcessorIdStrategy.Auto, "test");
        Assert.Contains(selection.Strategy, new[] { ProcessorIdStrategy.SchedGetCpu, ProcessorIdStrategy.CurrentProcessorId, ProcessorIdStrategy.CachedCpuId });
    }

    [Fact]
    public void ChildProcess_RseqDisabledByGlibcTunable_ChoosesAnotherStrategyAndCountersStayExact()
    {
        SkipUnlessAvailable(ProcessorIdStrategy.RseqCpuId);

        ChildRun.Result r = ChildRun.Run(
            new Dictionary<string, string> { ["GLIBC_TUNABLES"] = "glibc.pthread.rseq=0", ["PERCPU_EXPECT_NO_RSEQ"] = "1", ["PERCPU_EXPECT_WRITE_PATH"] = nameof(PerCpuWritePath.Interlocked) },
            "-trait", $"{Traits.Category}={Traits.Core}");

        Assert.True(r.ExitCode == 0 && r.Failed == 0 && r.Total > 5, r.Output);
        Assert.Contains("EXPECT_NO_RSEQ verified", r.Output, StringComparison.Ordinal);
        Assert.Contains("EXPECT_WRITE_PATH verified: Interlocked", r.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void ChildProcess_RseqWritesTurnedOff_InterlockedPathAndEveryCoreCheckPasses()
    {
        ChildRun.Result r = ChildRun.Run(
            new Dictionary<string, string> { ["PERCPU_RSEQ"] = "0", ["PERCPU_EXPECT_WRITE_PATH"] = nameof(PerCpuWritePath.Interlocked) },
            "-trait", $"{Traits.Category}={Traits.Core}");

        Assert.True(r.ExitCode == 0 && r.Failed == 0 && r.Total > 5, r.Output);
        Assert.Contains("EXPECT_WRITE_PATH verified: Interlocked", r.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void ChildProcess_HardwareIntrinsicsDisabled_CoreChecksPass()
    {
        ChildRun.Result r = ChildRun.Run(
            new Dictionary<string, string>
            {
                ["DOTNET_EnableHWIntrinsic"] = "0",
                ["PERCPU_EXPECT_NO_X86BASE"] = "1",
                ["PERCPU_EXPECT_WRITE_PATH"] = ProcessorId.WritePath.ToString(), // rseq sections need no intrinsics
            },
            "-trait", $"{Traits.Category}={Traits.Core}");

        Assert.True(r.ExitCode == 0 && r.Failed == 0 && r.Total > 5, r.Output);
        Assert.Contains("EXPECT_NO_X86BASE verified", r.Output, StringComparison.Ordinal);
        Assert.Contains("EXPECT_WRITE_PATH verified: " + ProcessorId.WritePath, r.Output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("schedgetcpu", ProcessorIdStrategy.SchedGetCpu)]
    [InlineData("CurrentProcessorId", ProcessorIdStrategy.CurrentProcessorId)]
    [InlineData("ManagedThreadId", ProcessorIdStrategy.ManagedThreadId)]
    public void ChildProcess_EnvironmentVariable_ForcesStrategy(string value, ProcessorIdStrategy expected)
    {
        SkipUnlessAvailable(expected);

        ChildRun.Result r = ChildRun.Run(
            new Dictionary<string, string> { [ProcessorId.EnvironmentVariable] = value, ["PERCPU_EXPECT_STRATEGY"] = expected.ToString() },
            "-method", $"{typeof(ChildProcessProbe).FullName}.{nameof(ChildProcessProbe.ReportsExpectations)}");

        Assert.True(r.ExitCode == 0 && r.Failed == 0 && r.Total == 1, r.Output);
        Assert.Contains($"EXPECT_STRATEGY verified: {expected}", r.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void ChildProcess_ProcessorCountLoweredByQuota_SlotsStillCoverTheAffinityMask()
    {
        // DOTNET_PROCESSOR_COUNT=1 lowers Environment.ProcessorCount as a cgroup quota does; the threads still run on
        // every CPU of the affinity mask, so the slots must cover those.
        int inMask = OperatingSystem.IsLinux() ? System.Numerics.BitOperations.PopCount((ulong)System.Diagnostics.Process.GetCurrentProcess().ProcessorAffinity) : 0;
        if (inMask < 2)
        {
            Assert.Skip("not Linux, or this machine lets the process run on one CPU only");
        }

        ChildRun.Result r = ChildRun.Run(
            new Dictionary<string, string> { ["DOTNET_PROCESSOR_COUNT"] = "1", ["PERCPU_EXPECT_SLOTS_AT_LEAST"] = inMask.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            "-method", $"{typeof(ChildProcessProbe).FullName}.{nameof(ChildProcessProbe.ReportsExpectations)}");

        Assert.True(r.ExitCode == 0 && r.Failed == 0 && r.Total == 1, r.Output);
        Assert.Contains("EXPECT_SLOTS verified", r.Output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("warp-drive")]
    [InlineData("42")] // Enum.TryParse takes numbers: an undefined strategy, then TypeInitializationException everywhere
    [InlineData("-1")]
    [InlineData("Rdpid, Rdtscp")] // Enum.TryParse ORs a comma list: 3 | 4 = ManagedThreadId, silently
    public void ChildProcess_BadEnvironmentVariable_ChoosesAutomaticallyAndSaysWhy(string value)
    {
        ChildRun.Result r = ChildRun.Run(
            new Dictionary<string, string> { [ProcessorId.EnvironmentVariable] = value, ["PERCPU_EXPECT_REASON"] = "is not a strategy name" },
            "-method", $"{typeof(ChildProcessProbe).FullName}.{nameof(ChildProcessProbe.ReportsExpectations)}");

        Assert.True(r.ExitCode == 0 && r.Failed == 0 && r.Total == 1, r.Output);
        Assert.Contains("EXPECT_REASON verified", r.Output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(42)]
    [InlineData(-1)]
    public void IsAvailable_UndefinedStrategy_IsFalseAndSaysSo(int value)
    {
        Assert.False(ProcessorId.IsAvailable((ProcessorIdStrategy)value, out string detail));
        Assert.Contains("is not a ProcessorIdStrategy", detail, StringComparison.Ordinal);
    }

    internal static void SkipUnlessAvailable(ProcessorIdStrategy strategy, [CallerMemberName] string? caller = null)
    {
        if (!ProcessorId.IsAvailable(strategy, out string detail))
        {
            Assert.Skip($"{strategy} is unavailable here: {detail}");
        }
    }
}

/// <summary>
/// Checks that only mean something in a child process started with particular environment variables; in a normal
/// run they have nothing to check and say so by skipping.
/// </summary>
[Trait(Traits.Category, Traits.Core)]
public sealed class ChildProcessProbe(ITestOutputHelper output)
{
    [Fact]
    public void ReportsExpectations()
    {
        bool any = false;
        if (Environment.GetEnvironmentVariable("PERCPU_EXPECT_NO_RSEQ") == "1")
        {
            any = true;
            Assert.False(ProcessorId.IsAvailable(ProcessorIdStrategy.RseqCpuId, out string d1), d1);
            Assert.False(ProcessorId.IsAvailable(ProcessorIdStrategy.RseqMmCid, out _));
            Assert.NotEqual(ProcessorIdStrategy.ManagedThreadId, ProcessorId.Strategy);
            Console.WriteLine("EXPECT_NO_RSEQ verified: " + ProcessorId.Strategy);
        }

        if (Environment.GetEnvironmentVariable("PERCPU_EXPECT_NO_X86BASE") == "1")
        {
            any = true;
            Assert.False(ProcessorId.IsAvailable(ProcessorIdStrategy.Rdpid, out string d2));
            Assert.Contains("X86Base", d2, StringComparison.Ordinal);
            Console.WriteLine("EXPECT_NO_X86BASE verified: " + ProcessorId.Strategy);
        }

        if (Environment.GetEnvironmentVariable("PERCPU_EXPECT_WRITE_PATH") is { } path)
        {
            any = true;
            Assert.Equal(path, ProcessorId.WritePath.ToString());
            Console.WriteLine($"EXPECT_WRITE_PATH verified: {path} ({ProcessorId.WritePathDetail})");
        }

        if (Environment.GetEnvironmentVariable("PERCPU_EXPECT_STRATEGY") is { } expected)
        {
            any = true;
            Assert.Equal(expected, ProcessorId.Strategy.ToString());
            Console.WriteLine("EXPECT_STRATEGY verified: " + expected);
        }

        if (Environment.GetEnvironmentVariable("PERCPU_EXPECT_SLOTS_AT_LEAST") is { } slots)
        {
            any = true;
            Assert.Equal(1, Environment.ProcessorCount); // DOTNET_PROCESSOR_COUNT=1 took effect
            Assert.True(ProcessorId.SlotCount >= int.Parse(slots, System.Globalization.CultureInfo.InvariantCulture), $"{ProcessorId.SlotCount} slots");
            Console.WriteLine($"EXPECT_SLOTS verified: {ProcessorId.SlotCount} slots with ProcessorCount 1");
        }

        if (Environment.GetEnvironmentVariable("PERCPU_EXPECT_REASON") is { } reason)
        {
            any = true;
            Assert.Contains(reason, ProcessorId.Selection.Reason, StringComparison.Ordinal);
            Assert.NotEqual(ProcessorIdStrategy.ManagedThreadId, ProcessorId.Strategy);
            Console.WriteLine("EXPECT_REASON verified");
        }

        if (Environment.GetEnvironmentVariable("PERCPU_EXPECT_CLOCK") is { } clock)
        {
            any = true;
            string? clockReason = Environment.GetEnvironmentVariable("PERCPU_EXPECT_CLOCK_REASON");
            if (clock == "defined")
            {
                Assert.True(PerCpuClock.Source is PerCpuClockSource.Stopwatch or PerCpuClockSource.Rdtsc, PerCpuClock.Source.ToString());
            }
            else
            {
                Assert.Equal(clock, PerCpuClock.Source.ToString());
            }

            if (clockReason is not null)
            {
                Assert.Contains(clockReason, PerCpuClock.Detail, StringComparison.Ordinal);
            }

            Console.WriteLine($"EXPECT_CLOCK verified: {PerCpuClock.Source} ({PerCpuClock.Detail})");
        }

        output.WriteLine(ProcessorId.Selection.ToString());
        if (!any)
        {
            Assert.Skip("nothing to check outside a child process started by ProcessorIdTests");
        }
    }
}

/// <summary>sched_getaffinity / sched_setaffinity of the calling thread (first 64 CPUs).</summary>
internal static partial class SchedAffinity
{
    public static int Get(ref ulong mask) => SchedGetAffinity(0, sizeof(ulong), ref mask);

    public static int Set(ref ulong mask) => SchedSetAffinity(0, sizeof(ulong), ref mask);

    [System.Runtime.InteropServices.LibraryImport("libc.so.6", EntryPoint = "sched_getaffinity")]
    private static partial int SchedGetAffinity(int pid, nuint size, ref ulong mask);

    [System.Runtime.InteropServices.LibraryImport("libc.so.6", EntryPoint = "sched_setaffinity")]
    private static partial int SchedSetAffinity(int pid, nuint size, ref ulong mask);
}
