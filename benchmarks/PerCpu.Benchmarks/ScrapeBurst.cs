using System.Diagnostics;
using System.Globalization;

namespace PerCpu.Benchmarks;

/// <summary>
/// What a burst of scrapes does to the app: the EndToEndApp (percpu variant, a fresh process per round) holds 2,000
/// series; 8 clients send other requests (<c>GET /items/1</c>) all along. Each round measures the other requests' p99
/// for 3 s without scrapes, then while 50 scrapes run in parallel, and reads the server's peak RSS (VmHWM), its RSS
/// 2 s after the burst, and the scrapes' own latencies. `--app` names the EndToEndApp.dll to run, so the same harness
/// measures a build of an older commit ("before").
/// </summary>
internal static class ScrapeBurst
{
    public static int Run(string[] args)
    {
        string app = Statistics.Arg(args, "--app", Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "EndToEndApp", "bin", "Release", "net10.0", "EndToEndApp.dll"));
        int rounds = int.Parse(Statistics.Arg(args, "--rounds", "3"), CultureInfo.InvariantCulture);
        int scrapes = int.Parse(Statistics.Arg(args, "--scrapes", "50"), CultureInfo.InvariantCulture);
        string label = Statistics.Arg(args, "--label", "current");
        Console.WriteLine($"scrapeburst: {label}, {rounds} rounds, {scrapes} parallel scrapes of 2000 series, app {Path.GetFullPath(app)}");
        Console.WriteLine("round,label,p99_quiet_ms,p99_burst_ms,burst_s,scrape_p50_ms,scrape_max_ms,scrape_bytes,peak_rss_mb,rss_after_mb");
        for (int round = 1; round <= rounds; round++)
        {
            Console.WriteLine(Measure(app, round, scrapes, label));
        }

        return 0;
    }

    private static string Measure(string app, int round, int scrapes, string label)
    {
        int port = EndToEnd.FreePort();
        string url = $"http://127.0.0.1:{port}";
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { app, "--variant", "percpu", "--urls", url })
        {
            psi.ArgumentList.Add(a);
        }

        using Process server = Process.Start(psi)!;
        server.OutputDataReceived += (_, _) => { };
        server.ErrorDataReceived += (_, _) => { };
        server.BeginOutputReadLine();
        server.BeginErrorReadLine();
        try
        {
            using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 256 }) { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(60) };
            EndToEnd.WaitReady(client);
            string[] methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
            Parallel.For(0, 2000, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
            {
                using var request = new HttpRequestMessage(new HttpMethod(methods[i / 400]), $"/status/{200 + (i % 400)}");
                using HttpResponseMessage r = client.Send(request);
            });

            using var stop = new CancellationTokenSource();
            var latencies = new System.Collections.Concurrent.ConcurrentBag<(long At, double Ms)>();
            Task[] others = [.. Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    using HttpResponseMessage r = await client.GetAsync("/items/1");
                    latencies.Add((t0, Stopwatch.GetElapsedTime(t0).TotalMilliseconds));
                }
            }))];

            Thread.Sleep(1000); // warm-up
            long quietStart = Stopwatch.GetTimestamp();
            Thread.Sleep(3000);
            long burstStart = Stopwatch.GetTimestamp();
            var scrapeMs = new double[scrapes];
            long bytes = 0;
            Task[] burst = [.. Enumerable.Range(0, scrapes).Select(i => Task.Run(async () =>
            {
                long t0 = Stopwatch.GetTimestamp();
                byte[] body = await client.GetByteArrayAsync("/metrics");
                scrapeMs[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                Interlocked.Add(ref bytes, body.Length);
            }))];
            Task.WaitAll(burst);
            long burstEnd = Stopwatch.GetTimestamp();
            double peak = StatusMb(server.Id, "VmHWM");
            Thread.Sleep(2000);
            double after = StatusMb(server.Id, "VmRSS");
            stop.Cancel();
            Task.WaitAll(others);

            double[] quiet = [.. latencies.Where(l => l.At >= quietStart && l.At < burstStart).Select(l => l.Ms)];
            double[] during = [.. latencies.Where(l => l.At >= burstStart && l.At < burstEnd).Select(l => l.Ms)];
            double burstSeconds = Stopwatch.GetElapsedTime(burstStart, burstEnd).TotalSeconds;
            return string.Create(CultureInfo.InvariantCulture,
                $"{round},{label},{P99(quiet):0.00},{P99(during):0.00},{burstSeconds:0.00},{Statistics.Median(scrapeMs):0.0},{scrapeMs.Max():0.0},{bytes / scrapes},{peak:0},{after:0}");
        }
        finally
        {
            server.Kill(entireProcessTree: true);
            server.WaitForExit(10_000);
        }
    }

    private static double P99(double[] values)
    {
        if (values.Length == 0)
        {
            return double.NaN;
        }

        Array.Sort(values);
        return values[Math.Min(values.Length - 1, (int)Math.Ceiling(values.Length * 0.99) - 1)];
    }

    private static double StatusMb(int pid, string field)
    {
        foreach (string line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
            {
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024.0;
            }
        }

        return double.NaN;
    }
}
