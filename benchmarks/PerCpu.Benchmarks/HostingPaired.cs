using System.Diagnostics;
using System.Globalization;

namespace PerCpu.Benchmarks;

/// <summary>
/// <c>hostingpaired [--variants none,percpu-http-only,...] [--rounds 41] [--batch 20000] [--warmup 300000] [--threads 1]</c>: the
/// <see cref="HostingBenchmarks"/> apps side by side in one process, one request at a time on one thread, in rounds:
/// each round times one batch of requests per variant, the variants in a new random order each round. A variant's
/// added cost in a round is its ns per request minus the no-metrics app's in the same round, so what the noisy machine
/// does to a whole round (another tenant, frequency) cancels out; the report gives the median and min-max of those
/// per-round differences, and bytes allocated per request. <c>--threads N</c> sends each batch from N threads at once
/// (wall time per request, all cores; bytes then from the process-wide, imprecise count). Small differences between variants, which separate
/// BenchmarkDotNet launches drown in their launch-to-launch spread, show here. The OpenTelemetry and prometheus-net
/// variants cannot share a process (their listeners take every app's meters); PerCpu's variants, with or without its
/// default meters, can (its listener takes only its own host's).
/// <c>hostingpaired --profile VARIANT --seconds 20</c> only sends requests to one variant, for a profiler
/// (<c>perf record</c> with <c>DOTNET_PerfMapEnabled=1</c>); <c>--scrape</c> prints what the variant exposes after it.
/// </summary>
internal static class HostingPaired
{
    public static int Run(string[] args)
    {
        string? profile = Statistics.Arg(args, "--profile", "") is { Length: > 0 } p ? p : null;
        if (profile is not null)
        {
            return Profile(profile, double.Parse(Statistics.Arg(args, "--seconds", "20"), CultureInfo.InvariantCulture), args);
        }

        string[] variants = Statistics.Arg(args, "--variants", "none,floor,percpu-http-only,percpu-http-only-no-tags-feature,percpu-http-only-stopwatch,percpu")
            .Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (variants.FirstOrDefault(v => v is "otel-prometheus" or "prometheus-net") is { } listening)
        {
            // Their MeterListeners take the meters of every app in the process: they would enable ASP.NET Core's
            // instruments in the other variants' apps too, and charge them for it. (PerCpu's listener collects only the
            // meters of its own host's IMeterFactory, so "percpu" can share the process.)
            Console.Error.WriteLine($"hostingpaired: {listening} listens to meters process-wide; run it with BenchmarkDotNet (HostingBenchmarks), one process per variant");
            return 2;
        }

        if (!variants.Contains("none"))
        {
            variants = ["none", .. variants];
        }

        int rounds = int.Parse(Statistics.Arg(args, "--rounds", "41"), CultureInfo.InvariantCulture);
        int batch = int.Parse(Statistics.Arg(args, "--batch", "20000"), CultureInfo.InvariantCulture);
        int warmup = int.Parse(Statistics.Arg(args, "--warmup", "300000"), CultureInfo.InvariantCulture);
        int threads = int.Parse(Statistics.Arg(args, "--threads", "1"), CultureInfo.InvariantCulture);

        Console.WriteLine($"# clock: {PerCpuClock.Source} ({PerCpuClock.Detail})");
        Console.WriteLine($"# hostingpaired: {Environment.ProcessorCount} CPUs, {ProcessorId.Strategy}, .NET {Environment.Version}, {rounds} rounds of {batch} requests per variant after {warmup} warm-up requests each, {threads} sending thread(s)");
        HostingBenchmarks[] apps = [.. variants.Select(v =>
        {
            var b = new HostingBenchmarks { Variant = v };
            b.Setup();
            return b;
        })];
        try
        {
            foreach (HostingBenchmarks app in apps)
            {
                for (int i = 0; i < warmup; i++)
                {
                    _ = app.Send();
                }
            }

            var ns = new List<double>[apps.Length];
            var bytes = new List<double>[apps.Length];
            for (int v = 0; v < apps.Length; v++)
            {
                ns[v] = [];
                bytes[v] = [];
            }

            var random = new Random(20261203);
            int[] order = [.. Enumerable.Range(0, apps.Length)];
            for (int r = 0; r < rounds; r++)
            {
                random.Shuffle(order);
                foreach (int v in order)
                {
                    HostingBenchmarks app = apps[v];
                    long allocated = threads == 1 ? GC.GetAllocatedBytesForCurrentThread() : GC.GetTotalAllocatedBytes(precise: false);
                    long start = Stopwatch.GetTimestamp();
                    if (threads == 1)
                    {
                        for (int i = 0; i < batch; i++)
                        {
                            _ = app.Send();
                        }
                    }
                    else
                    {
                        // All cores: the batch split over the threads, wall time per request (as HostingBenchmarks.AllCores).
                        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, _ =>
                        {
                            for (int i = 0; i < batch / threads; i++)
                            {
                                _ = app.Send();
                            }
                        });
                    }

                    double elapsed = Stopwatch.GetElapsedTime(start).TotalNanoseconds;
                    ns[v].Add(elapsed / batch);
                    long after = threads == 1 ? GC.GetAllocatedBytesForCurrentThread() : GC.GetTotalAllocatedBytes(precise: false);
                    bytes[v].Add((double)(after - allocated) / batch);
                }
            }

            int none = Array.IndexOf(variants, "none");
            Console.WriteLine("variant,ns_per_request_median,ns_min,ns_max,added_ns_median,added_ns_min,added_ns_max,bytes_per_request_median");
            for (int v = 0; v < apps.Length; v++)
            {
                double[] added = [.. ns[v].Select((x, r) => x - ns[none][r])];
                Console.WriteLine(string.Join(',',
                    variants[v],
                    F(Statistics.Median(ns[v])), F(ns[v].Min()), F(ns[v].Max()),
                    F(Statistics.Median(added)), F(added.Min()), F(added.Max()),
                    F(Statistics.Median(bytes[v]))));
            }

            // Differences between every pair of PerCpu variants, per round: what one option costs against another.
            Console.WriteLine("pair,diff_ns_median,diff_ns_min,diff_ns_max");
            for (int a = 0; a < apps.Length; a++)
            {
                for (int b = a + 1; b < apps.Length; b++)
                {
                    if (a == none || b == none)
                    {
                        continue;
                    }

                    double[] diff = [.. ns[a].Select((x, r) => x - ns[b][r])];
                    Console.WriteLine($"{variants[a]} - {variants[b]},{F(Statistics.Median(diff))},{F(diff.Min())},{F(diff.Max())}");
                }
            }
        }
        finally
        {
            foreach (HostingBenchmarks app in apps)
            {
                app.Cleanup();
            }
        }

        return 0;
    }

    private static int Profile(string variant, double seconds, string[] args)
    {
        var app = new HostingBenchmarks { Variant = variant };
        app.Setup();
        var clock = Stopwatch.StartNew();
        long n = 0;
        while (clock.Elapsed.TotalSeconds < seconds)
        {
            for (int i = 0; i < 10_000; i++)
            {
                _ = app.Send();
            }

            n += 10_000;
        }

        Console.WriteLine($"{variant}: {n} requests in {clock.Elapsed.TotalSeconds:F1} s, {clock.Elapsed.TotalNanoseconds / n:F0} ns each");
        if (args.Contains("--scrape"))
        {
            Console.WriteLine(app.Scrape()); // what the variant exposes after the run
        }
        app.Cleanup();
        return 0;
    }

    private static string F(double v) => v.ToString("F1", CultureInfo.InvariantCulture);
}
