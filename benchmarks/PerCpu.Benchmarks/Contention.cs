using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;

namespace PerCpu.Benchmarks;

/// <summary>
/// Multi-threaded contention harness. For each thread count, every case runs for a fixed time per round; cases are
/// interleaved and their order rotated each round, so a noisy moment hurts all of them alike. Reports the median
/// and min-max of throughput over the rounds, and ratios computed within each round (then the median of those).
/// </summary>
/// <remarks>
/// Usage: <c>contention [--suite counters|histograms|meterapi|stride|all] [--rounds 5] [--ms 300] [--threads 1,2,8] [--out file.csv]</c>.
/// Default thread counts: 1, all cores, 4x cores. Each case checks after each run that the instrument counted every
/// operation the threads reported (a lost update fails the run).
/// </remarks>
internal static class Contention
{
    public static int Run(string[] args)
    {
        string suite = Statistics.Arg(args, "--suite", "counters");
        int rounds = int.Parse(Statistics.Arg(args, "--rounds", "5"), CultureInfo.InvariantCulture);
        int ms = int.Parse(Statistics.Arg(args, "--ms", "300"), CultureInfo.InvariantCulture);
        int cores = Environment.ProcessorCount;
        int[] threads = Statistics.Arg(args, "--threads", $"1,{cores},{4 * cores}").Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).Distinct().ToArray();
        string output = Statistics.Arg(args, "--out", Path.Combine("BenchmarkDotNet.Artifacts", $"contention-{suite}.csv"));

        Console.WriteLine($"# PerCpu contention harness: suite {suite}, {rounds} rounds x {ms} ms, threads {string.Join(",", threads)}");
        Console.WriteLine($"# {Environment.MachineName}: {cores} logical CPUs, {RuntimeInformationText()}");
        Console.WriteLine($"# {ProcessorId.Selection.ToString().Replace("\n", "\n# ", StringComparison.Ordinal)}");
        Console.WriteLine($"# write path: {ProcessorId.WritePath} ({ProcessorId.WritePathDetail})");

        var cases = new List<Case>();
        var ratios = new List<(string Name, string Numerator, string Denominator)>();
        if (suite is "counters" or "all")
        {
            CounterCases.Add(cases, ratios);
        }

        if (suite is "histograms" or "all")
        {
            HistogramCases.Add(cases, ratios);
        }

        if (suite is "meterapi" or "all")
        {
            MeterApiCases.Add(cases, ratios);
        }

        if (suite is "stride")
        {
            StrideCases.Add(cases);
        }

        var results = new Dictionary<(string Case, int Threads), List<double>>();
        var csv = new StringBuilder("case,threads,round,mops\n");
        foreach (int t in threads)
        {
            for (int round = 0; round < rounds; round++)
            {
                for (int k = 0; k < cases.Count; k++)
                {
                    Case c = cases[(k + round) % cases.Count];
                    double mops = Measure(c, t, ms);
                    results.TryAdd((c.Name, t), []);
                    results[(c.Name, t)].Add(mops);
                    csv.Append(CultureInfo.InvariantCulture, $"\"{c.Name}\",{t},{round},{mops:0.000}\n");
                }
            }
        }

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output))!);
        File.WriteAllText(output, csv.ToString());

        Console.WriteLine();
        Console.WriteLine("Throughput, all threads together, Mops/s: median (min-max) of rounds");
        Console.WriteLine();
        Console.WriteLine("| case | " + string.Join(" | ", threads.Select(t => $"T={t}")) + " |");
        Console.WriteLine("|---|" + string.Join("", threads.Select(_ => "---:|")));
        foreach (Case c in cases)
        {
            Console.WriteLine($"| {c.Name} | " + string.Join(" | ", threads.Select(t => Statistics.Summary(results[(c.Name, t)], "0.0"))) + " |");
        }

        if (ratios.Count > 0)
        {
            Console.WriteLine();
            Console.WriteLine("Ratios of throughput within each round: median (min-max)");
            Console.WriteLine();
            Console.WriteLine("| ratio | " + string.Join(" | ", threads.Select(t => $"T={t}")) + " |");
            Console.WriteLine("|---|" + string.Join("", threads.Select(_ => "---:|")));
            foreach ((string name, string num, string den) in ratios)
            {
                Console.WriteLine($"| {name} | " + string.Join(" | ", threads.Select(t =>
                {
                    List<double> a = results[(num, t)], b = results[(den, t)];
                    return Statistics.Summary([.. a.Zip(b, (x, y) => x / y)], "0.00") + "x";
                })) + " |");
            }
        }

        Console.WriteLine();
        Console.WriteLine($"Raw per-round figures: {output}");
        return 0;
    }

    private static double Measure(Case c, int threadCount, int ms)
    {
        c.Prepare();
        var stop = new StopFlag();
        long[] ops = new long[threadCount];
        using var ready = new Barrier(threadCount + 1);
        var workers = new Thread[threadCount];
        for (int i = 0; i < threadCount; i++)
        {
            int index = i;
            workers[i] = new Thread(() =>
            {
                Action<StopFlag, long[], int> work = c.CreateWorker(index);
                ready.SignalAndWait();
                work(stop, ops, index);
            }) { IsBackground = true };
            workers[i].Start();
        }

        ready.SignalAndWait();
        long start = Stopwatch.GetTimestamp();
        Thread.Sleep(ms);
        stop.Stopped = true;
        foreach (Thread w in workers)
        {
            w.Join();
        }

        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        long total = ops.Sum();
        c.Verify(total);
        return total / seconds / 1e6;
    }



    private static string RuntimeInformationText() =>
        $"{System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription}, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, {CpuModel()}";

    private static string CpuModel()
    {
        try
        {
            return File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU";
        }
        catch (IOException)
        {
            return "unknown CPU";
        }
    }
}

internal sealed class StopFlag
{
    private volatile bool _stopped;

    public bool Stopped { get => _stopped; set => _stopped = value; }
}

/// <summary>One measured operation kind.</summary>
internal abstract class Case(string name)
{
    public string Name { get; } = name;

    /// <summary>Runs before each measurement (on the harness thread).</summary>
    public virtual void Prepare()
    {
    }

    /// <summary>Per-thread setup, then a loop until stopped that stores its operation count.</summary>
    public abstract Action<StopFlag, long[], int> CreateWorker(int threadIndex);

    /// <summary>After each measurement: the instrument must have counted every operation.</summary>
    public virtual void Verify(long operations)
    {
    }
}

/// <summary>An operation as a struct, so the JIT specializes and inlines the loop for each case.</summary>
internal interface IOperation
{
    /// <summary>Called on the loop's local copy, so a mutable struct keeps its state (an index into its values).</summary>
    void Invoke();
}

internal sealed class OperationCase<T>(string name, Func<int, T> create, Action? prepare = null, Func<long>? observed = null) : Case(name)
    where T : struct, IOperation
{
    private long _expected;

    public override void Prepare()
    {
        prepare?.Invoke();
        _expected = observed?.Invoke() ?? 0;
    }

    public override Action<StopFlag, long[], int> CreateWorker(int threadIndex)
    {
        T op = create(threadIndex);
        return (stop, ops, index) => ops[index] = Loop(op, stop);
    }

    public override void Verify(long operations)
    {
        if (observed is not null)
        {
            long seen = observed() - _expected;
            if (seen != operations)
            {
                throw new InvalidOperationException($"{Name}: instrument counted {seen}, threads performed {operations}");
            }
        }
    }

    // FullOpts from the start: every case gets the same optimized code, with no tier-0 or OSR phase inside a round.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static long Loop(T op, StopFlag stop)
    {
        long n = 0;
        while (!stop.Stopped)
        {
            for (int i = 0; i < 256; i++)
            {
                op.Invoke();
            }

            n += 256;
        }

        return n;
    }
}
