using System.Diagnostics;
using System.Text;

namespace PerCpu.Tests;

/// <summary>Tests that change process-wide state (the active CPU-id strategy) run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class GlobalStrategyCollection
{
    public const string Name = "Global processor-id strategy";
}

/// <summary>The trait that marks the suite's core checks, run again in child processes with other settings.</summary>
public static class Traits
{
    public const string Category = "Category";
    public const string Core = "Core";
}

/// <summary>The shape of every stress test: many writer threads, released together, while this thread reads.</summary>
public static class Stress
{
    /// <summary>
    /// Starts <paramref name="threads"/> threads running <paramref name="write"/>(thread index), released together by a
    /// barrier; calls <paramref name="read"/> in a loop on the calling thread until every writer is done; joins them.
    /// </summary>
    /// <remarks>
    /// A writer that finishes waits (up to 30 s) until at least two reads have completed, so a scheduler that runs every
    /// writer to the end before the reading thread gets a core still yields reads with writers alive (two, because the
    /// collect test needs a delta between collects).
    /// </remarks>
    /// <returns>How many reads ran while writers were still running.</returns>
    public static int WritersWhileReading(int threads, Action<int> write, Action read)
    {
        using var start = new Barrier(threads + 1);
        int reads = 0;
        bool readerGone = false;
        Thread[] writers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            write(t);
            SpinWait.SpinUntil(() => Volatile.Read(ref reads) >= 2 || Volatile.Read(ref readerGone), TimeSpan.FromSeconds(30));
        })).ToArray();
        foreach (Thread w in writers)
        {
            w.Start();
        }

        start.SignalAndWait();
        try
        {
            while (writers.Any(w => w.IsAlive))
            {
                read();
                Volatile.Write(ref reads, reads + 1);
            }
        }
        finally
        {
            Volatile.Write(ref readerGone, true); // a failed read releases the writers at once
        }

        foreach (Thread w in writers)
        {
            w.Join();
        }

        return reads;
    }
}

/// <summary>Runs this very test assembly again in a child process with extra environment variables.</summary>
public static class ChildRun
{
    public sealed record Result(int ExitCode, string Output, int Total, int Failed);

    public static Result Run(IReadOnlyDictionary<string, string> environment, params string[] filterArgs)
    {
        string assembly = typeof(ChildRun).Assembly.Location;
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(assembly);
        foreach (string a in filterArgs)
        {
            psi.ArgumentList.Add(a);
        }

        psi.ArgumentList.Add("-parallel");
        psi.ArgumentList.Add("none");
        foreach ((string key, string value) in environment)
        {
            psi.Environment[key] = value;
        }

        using Process p = Process.Start(psi)!;
        var output = new StringBuilder();
        p.OutputDataReceived += (_, e) => { lock (output) { output.AppendLine(e.Data); } };
        p.ErrorDataReceived += (_, e) => { lock (output) { output.AppendLine(e.Data); } };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(TimeSpan.FromMinutes(4)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException("child test run did not finish in 4 minutes:\n" + output);
        }

        p.WaitForExit();
        string text;
        lock (output)
        {
            text = output.ToString();
        }

        // xunit v3 summary: "Total: 12, Errors: 0, Failed: 0, Skipped: 0, ..."
        System.Text.RegularExpressions.Match m = System.Text.RegularExpressions.Regex.Match(text, @"Total: (\d+), Errors: (\d+), Failed: (\d+)");
        int total = m.Success ? int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : -1;
        int failed = m.Success ? int.Parse(m.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture) + int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture) : -1;
        return new Result(p.ExitCode, text, total, failed);
    }
}
