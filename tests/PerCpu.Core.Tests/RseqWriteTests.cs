using System.Diagnostics;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PerCpu.Internal;

namespace PerCpu.Tests;

/// <summary>
/// Exactness of every instrument's writes on whichever write path this process chose (<see cref="ProcessorId.WritePath"/>):
/// 16 writer threads (8x the cores here) x 1M writes while something keeps interrupting them: re-pinning to random CPUs,
/// a signal storm, a GC storm. The child runs in ProcessorIdTests repeat these with rseq off. Plus proof that the kernel
/// really restarts sections (a widened window), and that a thread without a registered rseq area stays exact.
/// </summary>
[Trait(Traits.Category, Traits.Core)]
public sealed partial class RseqWriteTests
{
    private const int Threads = 16;
    private const int WritesPerThread = 1_000_000;
    private const int Sigwinch = 28;

    // Dyadic values (k/1024): every partial sum is exact in a double, so sums compare exactly in any order.
    private static readonly double[] Values = [.. Enumerable.Range(1, 997).Select(k => k * 7 % 4000 / 1024.0)];
    private static readonly long[] TickValues = [.. Enumerable.Range(0, 1009).Select(k => (long)k * k * 31 % (Stopwatch.Frequency / 10))];

    public enum Disturbance
    {
        RepinToRandomCpus,
        SignalStorm,
        GcStorm,
    }

    [Theory]
    [InlineData(Disturbance.RepinToRandomCpus)]
    [InlineData(Disturbance.SignalStorm)]
    [InlineData(Disturbance.GcStorm)]
    public void EveryInstrument_16Threads_ExactUnderDisturbance(Disturbance disturbance)
    {
        var counter = new PerCpuCounter();
        var upDown = new PerCpuUpDownCounter();
        var histogram = new PerCpuHistogram();
        var ticks = new PerCpuHistogram();
        ulong allowed = AllowedCpus();
        var tids = new int[Threads];
        using var done = new CancellationTokenSource();
        using PosixSignalRegistration? handler = disturbance == Disturbance.SignalStorm && OperatingSystem.IsLinux() ? PosixSignalRegistration.Create(PosixSignal.SIGWINCH, c => c.Cancel = true) : null;
        long disturbances = 0;
        var disturber = new Thread(() =>
        {
            int pid = Environment.ProcessId;
            while (!done.IsCancellationRequested)
            {
                if (disturbance == Disturbance.SignalStorm)
                {
                    foreach (int tid in tids)
                    {
                        if (tid != 0 && Tgkill(pid, tid, Sigwinch) == 0)
                        {
                            disturbances++;
                        }
                    }

                    Thread.Yield();
                }
                else if (disturbance == Disturbance.GcStorm)
                {
                    GC.Collect(2, GCCollectionMode.Forced, blocking: true);
                    disturbances++;
                }
                else
                {
                    Thread.Sleep(1);
                }
            }
        }) { IsBackground = true };
        disturber.Start();

        Stress.WritersWhileReading(Threads, t =>
        {
            Volatile.Write(ref tids[t], Gettid());
            var random = new Random(t);
            for (int i = 0; i < WritesPerThread; i++)
            {
                if (disturbance == Disturbance.RepinToRandomCpus && i % 4096 == 0)
                {
                    ulong mask = RandomCpu(allowed, random);
                    if (SchedAffinity.Set(ref mask) == 0)
                    {
                        Interlocked.Increment(ref disturbances);
                    }
                }

                counter.Increment();
                upDown.Add((i & 1) == 0 ? 3 : -1);
                histogram.Record(Values[(i + t) % Values.Length]);
                ticks.RecordTicks(TickValues[(i + (t * 7)) % TickValues.Length]);
            }
        }, () => Thread.Sleep(5));
        done.Cancel();
        disturber.Join();

        Assert.True(disturbances > 0, $"the {disturbance} never happened");
        TestContext.Current.TestOutputHelper?.WriteLine($"{disturbance}: {disturbances} times, write path {ProcessorId.WritePath}");
        Assert.Equal((long)Threads * WritesPerThread, counter.Sum());
        Assert.Equal((long)Threads * (WritesPerThread / 2) * 2, upDown.Sum());

        // Every bucket, count, sum, min and max equal a reference fed the same values on one thread.
        var referenceValues = new PerCpuHistogram();
        var referenceTicks = new PerCpuHistogram();
        for (int t = 0; t < Threads; t++)
        {
            for (int i = 0; i < WritesPerThread; i++)
            {
                referenceValues.Record(Values[(i + t) % Values.Length]);
                referenceTicks.RecordTicks(TickValues[(i + (t * 7)) % TickValues.Length]);
            }
        }

        HistogramTests.AssertSame(referenceValues.Snapshot(), histogram.Snapshot());
        HistogramTests.AssertSame(referenceTicks.Snapshot(), ticks.Snapshot());
    }

    /// <summary>
    /// The kernel restarts sections: a stub that loads a cell, spins, then stores the sum (a plain read-modify-write,
    /// the widest possible window) stays exact with 8 threads on the cores here only because every preemption or signal
    /// inside the window aborts it; each abort is counted. The same code with the section never announced to the
    /// kernel loses adds.
    /// </summary>
    [Fact]
    public void WidenedWindow_RegisteredSectionRestartsAndLosesNothing_UnregisteredLoses()
    {
        SkipUnlessRseq();
        (long lost, long aborts) = RunWidened(register: true);
        Assert.Equal(0, lost);
        Assert.True(aborts > 0, "no section was aborted and restarted");

        long unregisteredLost = 0;
        for (int attempt = 0; attempt < 3 && unregisteredLost == 0; attempt++)
        {
            (unregisteredLost, long none) = RunWidened(register: false);
            Assert.Equal(0, none); // nothing to restart: the kernel never knew the section
        }

        Assert.True(unregisteredLost > 0, "the unregistered control lost nothing: the window is too narrow to prove restarts");
        TestContext.Current.TestOutputHelper?.WriteLine($"registered: 0 lost, {aborts} restarts; unregistered: {unregisteredLost} of 80000 adds lost");
    }

    /// <summary>A thread whose rseq area is unregistered must not take the section: its writes go to the shared interlocked cell.</summary>
    [Fact]
    public void ThreadWithoutRegisteredArea_WritesTheSharedCell_Exact()
    {
        SkipUnlessRseq();
        var counter = new PerCpuCounter();
        var histogram = new PerCpuHistogram();
        var ticks = new PerCpuHistogram();
        string? skip = null;
        int cpuIdAfter = 0;
        const int Writes = 200_000;
        var writer = new Thread(() =>
        {
            // The kernel sets cpu_id to -1 (RSEQ_CPU_ID_UNINITIALIZED) when a thread unregisters. This thread then exits.
            nint area = Libc.PthreadSelf() + RseqWrites.RseqOffset;
            if (Syscall(RseqSyscall, area, 32, 1, (nint)RseqWrites.Signature) != 0 && Syscall(RseqSyscall, area, 20, 1, (nint)RseqWrites.Signature) != 0)
            {
                skip = $"rseq unregister refused (errno {Marshal.GetLastPInvokeError()})";
                return;
            }

            cpuIdAfter = Marshal.ReadInt32(area, 4);
            for (int i = 0; i < Writes; i++)
            {
                counter.Increment();
                histogram.Record(0.5);
                ticks.RecordTicks(1000);
            }
        });
        writer.Start();
        writer.Join();
        if (skip is not null)
        {
            Assert.Skip(skip);
        }

        Assert.True(cpuIdAfter < 0, $"cpu_id {cpuIdAfter} after unregistering");
        Assert.Equal(Writes, counter.Sum());
        Assert.Equal(Writes, histogram.Snapshot().Count);
        Assert.Equal(Writes * 0.5, histogram.Snapshot().Sum);
        Assert.Equal(Writes, ticks.Snapshot().Count);
        Assert.Equal(Writes * 1000 / (double)Stopwatch.Frequency, ticks.Snapshot().Sum, 12);

        // Every write went to the last, interlocked-only slot.
        object shards = typeof(PerCpuCounter).GetField("_shards", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(counter)!;
        var cells = (PaddedInt64?[])shards.GetType().GetField("_cells", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(shards)!;
        Assert.Equal(ProcessorId.SlotCount + 1, cells.Length);
        Assert.Equal(Writes, cells[^1]!.Value);
        Assert.All(cells[..^1], c => Assert.True(c is null || c.Value == 0));
    }

    [Fact]
    public void WritePath_IsReportedWithItsReason()
    {
        Assert.False(string.IsNullOrWhiteSpace(ProcessorId.WritePathDetail));
        if (Environment.GetEnvironmentVariable(RseqWrites.EnvironmentVariable) == "0")
        {
            Assert.Equal(PerCpuWritePath.Interlocked, ProcessorId.WritePath);
            Assert.Contains(RseqWrites.EnvironmentVariable, ProcessorId.WritePathDetail, StringComparison.Ordinal);
        }
        else if (ProcessorId.IsAvailable(ProcessorIdStrategy.RseqMmCid, out _))
        {
            Assert.Equal(PerCpuWritePath.Rseq, ProcessorId.WritePath);
            Assert.Contains("self-test exact", ProcessorId.WritePathDetail, StringComparison.Ordinal);
        }
        else
        {
            Assert.Equal(PerCpuWritePath.Interlocked, ProcessorId.WritePath);
        }
    }

    private static unsafe (long Lost, long Aborts) RunWidened(bool register)
    {
        int slots = ProcessorId.SlotCount;
        nint stub = RseqStubs.BuildWidened(RseqWrites.RseqOffset, slots - 1, spin: 300, register, out string? refusal);
        Assert.True(stub != 0, refusal);
        var cells = new long[]?[slots + 1];
        for (int s = 0; s < cells.Length; s++)
        {
            cells[s] = new long[4];
        }

        const int WidenedThreads = 8, Adds = 10_000;
        long aborts = 0;
        Stress.WritersWhileReading(WidenedThreads, _ =>
        {
            long* abortCounter = stackalloc long[1];
            for (int i = 0; i < Adds; i++)
            {
                int r;
                fixed (byte* p = &Unsafe.As<long[]?, byte>(ref MemoryMarshal.GetArrayDataReference(cells)))
                {
                    r = ((delegate* unmanaged[SuppressGCTransition]<nint*, nint, long, long*, int>)stub)((nint*)p, RseqWrites.ArrayDataOffset, 1, abortCounter);
                }

                if (r == -1)
                {
                    Interlocked.Increment(ref cells[slots]![0]);
                }
            }

            Interlocked.Add(ref aborts, *abortCounter);
        }, () => Thread.Sleep(5));
        long total = cells.Sum(c => c![0]);
        return ((long)WidenedThreads * Adds - total, aborts);
    }

    private static void SkipUnlessRseq()
    {
        if (ProcessorId.WritePath != PerCpuWritePath.Rseq)
        {
            Assert.Skip("this process writes with interlocked operations: " + ProcessorId.WritePathDetail);
        }
    }

    private static ulong AllowedCpus()
    {
        ulong mask = 0;
        if (!OperatingSystem.IsLinux() || SchedAffinity.Get(ref mask) != 0 || mask == 0)
        {
            return 0;
        }

        return mask;
    }

    private static ulong RandomCpu(ulong allowed, Random random)
    {
        int count = System.Numerics.BitOperations.PopCount(allowed);
        int pick = random.Next(count);
        for (int cpu = 0; cpu < 64; cpu++)
        {
            if ((allowed & (1UL << cpu)) != 0 && pick-- == 0)
            {
                return 1UL << cpu;
            }
        }

        return allowed;
    }

    private const long RseqSyscall = 334; // x86-64
    private const long TgkillSyscall = 234;
    private const long GettidSyscall = 186;

    private static int Gettid() => (int)Syscall(GettidSyscall, 0, 0, 0, 0);

    private static int Tgkill(int pid, int tid, int signal) => (int)Syscall(TgkillSyscall, pid, tid, signal, 0);

    [LibraryImport("libc.so.6", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, nint a, nint b, nint c, nint d);
}
