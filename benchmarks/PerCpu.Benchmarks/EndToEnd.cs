using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace PerCpu.Benchmarks;

/// <summary>
/// The end-to-end comparison: for each round, each load shape and each variant (order rotated every round), a fresh
/// server process is started, warmed up (and scraped: prometheus-net gets costlier after its first scrape), then wrk
/// drives it for a fixed time. Per measurement: RPS, p50/p99 latency, server CPU and allocated bytes per request (read
/// from the process on SIGHUP before and after the run), and the scraped request count against wrk's total.
/// </summary>
internal static partial class EndToEnd
{
    private static string[] s_variants = ["none", "percpu", "otel", "promnet"];

    public static int Run(string[] args)
    {
        string app = Statistics.Arg(args, "--app", "benchmarks/EndToEndApp/bin/Release/net10.0/EndToEndApp.dll");
        string lua = Statistics.Arg(args, "--lua", "benchmarks/endtoend/mixed.lua");
        int rounds = int.Parse(Statistics.Arg(args, "--rounds", "10"), CultureInfo.InvariantCulture);
        int seconds = int.Parse(Statistics.Arg(args, "--seconds", "5"), CultureInfo.InvariantCulture);
        int warmup = int.Parse(Statistics.Arg(args, "--warmup", "2"), CultureInfo.InvariantCulture);
        int connections = int.Parse(Statistics.Arg(args, "--connections", "64"), CultureInfo.InvariantCulture);
        int threads = int.Parse(Statistics.Arg(args, "--threads", "2"), CultureInfo.InvariantCulture);
        string output = Statistics.Arg(args, "--out", Path.Combine("BenchmarkDotNet.Artifacts", "endtoend.csv"));
        string[] shapes = Statistics.Arg(args, "--shapes", "one-route,mixed").Split(',');
        s_variants = Statistics.Arg(args, "--variants", string.Join(',', s_variants)).Split(',');

        Console.WriteLine($"# end to end: {rounds} rounds x {shapes.Length} shapes x {s_variants.Length} variants; wrk -t{threads} -c{connections} -d{seconds}s --latency, {warmup}s warm-up; a fresh server per measurement");
        var rows = new List<Row>();
        var csv = new StringBuilder("round,shape,variant,rps,p50_ms,p99_ms,requests,non2xx,cpu_us_per_req,alloc_b_per_req,scraped,wrk_requests\n");
        for (int round = 0; round < rounds; round++)
        {
            foreach (string shape in shapes)
            {
                for (int k = 0; k < s_variants.Length; k++)
                {
                    string variant = s_variants[(k + round) % s_variants.Length];
                    Row row = Measure(app, lua, variant, shape, round, seconds, warmup, connections, threads);
                    rows.Add(row);
                    csv.Append(CultureInfo.InvariantCulture, $"{row.Round},{row.Shape},{row.Variant},{row.Rps:0.0},{row.P50:0.000},{row.P99:0.000},{row.Requests},{row.Non2xx},{row.CpuUsPerRequest:0.000},{row.AllocPerRequest:0.0},{row.Scraped},{row.Requests}\n");
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  round {round} {shape,-9} {variant,-8} {row.Rps,9:0} rps  p50 {row.P50:0.00} ms  p99 {row.P99:0.00} ms  cpu {row.CpuUsPerRequest:0.00} us/req  alloc {row.AllocPerRequest:0} B/req  scraped {(row.Scraped < 0 ? "-" : row.Scraped.ToString(CultureInfo.InvariantCulture))} vs wrk {row.Requests}"));
                }
            }
        }

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output))!);
        File.WriteAllText(output, csv.ToString());
        Console.WriteLine();
        Console.WriteLine(Summarize(rows));
        Console.WriteLine($"Raw per-measurement figures: {output}");
        return 0;
    }

    internal static string Summarize(List<Row> rows)
    {
        var sb = new StringBuilder();
        foreach (IGrouping<string, Row> shape in rows.GroupBy(r => r.Shape))
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"Shape {shape.Key}: median (min-max) over rounds; ratio and added CPU/alloc are per round against 'none' in the same round");
            sb.AppendLine();
            sb.AppendLine("| variant | RPS | RPS / none | p50 ms | p99 ms | server CPU us/req | added CPU us/req | alloc B/req | added B/req | scraped - wrk requests |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            var none = shape.Where(r => r.Variant == "none").ToDictionary(r => r.Round);
            foreach (string variant in s_variants)
            {
                Row[] v = [.. shape.Where(r => r.Variant == variant)];
                double[] ratio = [.. v.Select(r => r.Rps / none[r.Round].Rps)];
                double[] addedCpu = [.. v.Select(r => r.CpuUsPerRequest - none[r.Round].CpuUsPerRequest)];
                double[] addedAlloc = [.. v.Select(r => r.AllocPerRequest - none[r.Round].AllocPerRequest)];
                string counting = variant == "none" ? "-" : Statistics.Summary([.. v.Select(r => (double)(r.Scraped - r.Requests))], "0", " to ");
                sb.AppendLine(CultureInfo.InvariantCulture, $"| {variant} | {Statistics.Summary([.. v.Select(r => r.Rps)], "0", " to ")} | {Statistics.Summary(ratio, "0.00", " to ")} | {Statistics.Summary([.. v.Select(r => r.P50)], "0.00", " to ")} | {Statistics.Summary([.. v.Select(r => r.P99)], "0.00", " to ")} | {Statistics.Summary([.. v.Select(r => r.CpuUsPerRequest)], "0.00", " to ")} | {Statistics.Summary(addedCpu, "0.00", " to ")} | {Statistics.Summary([.. v.Select(r => r.AllocPerRequest)], "0", " to ")} | {Statistics.Summary(addedAlloc, "0", " to ")} | {counting} |");
            }

            sb.AppendLine();
        }

        return sb.ToString();
    }

    private static Row Measure(string app, string lua, string variant, string shape, int round, int seconds, int warmup, int connections, int threads)
    {
        int port = FreePort();
        string url = $"http://127.0.0.1:{port}";
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { app, "--variant", variant, "--urls", url })
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["DOTNET_gcServer"] = "1";
        using Process server = Process.Start(psi)!;
        var stats = new System.Collections.Concurrent.BlockingCollection<(long Alloc, double CpuMs)>();
        server.OutputDataReceived += (_, e) =>
        {
            if (e.Data?.StartsWith("STATS ", StringComparison.Ordinal) == true)
            {
                string[] parts = e.Data.Split(' ');
                stats.Add((long.Parse(parts[1], CultureInfo.InvariantCulture), double.Parse(parts[2], CultureInfo.InvariantCulture)));
            }
        };
        server.ErrorDataReceived += (_, _) => { };
        server.BeginOutputReadLine();
        server.BeginErrorReadLine();
        try
        {
            using var client = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(10) };
            WaitReady(client);
            string target = url + "/items/1";
            Wrk(threads, connections, warmup, shape == "mixed" ? lua : null, target);
            Thread.Sleep(200); // requests wrk abandoned at the end of the warm-up finish before the baseline scrape
            long before = Scraped(client, variant); // also the warm-up scrape (prometheus-net gets costlier after it)
            (long Alloc, double CpuMs) b = Stats(server, stats);
            WrkResult w = Wrk(threads, connections, seconds, shape == "mixed" ? lua : null, target);
            (long Alloc, double CpuMs) a = Stats(server, stats);
            Thread.Sleep(200); // let requests that wrk abandoned at its deadline finish on the server
            long after = Scraped(client, variant);
            return new Row(round, shape, variant, w.Rps, w.P50, w.P99, w.Requests, w.Non2xx,
                (a.CpuMs - b.CpuMs) * 1000 / w.Requests, (a.Alloc - b.Alloc) / (double)w.Requests, variant == "none" ? -1 : after - before);
        }
        finally
        {
            server.Kill(entireProcessTree: true);
            server.WaitForExit(10_000);
        }
    }

    private static (long Alloc, double CpuMs) Stats(Process server, System.Collections.Concurrent.BlockingCollection<(long Alloc, double CpuMs)> stats)
    {
        using Process kill = Process.Start("kill", ["-HUP", server.Id.ToString(CultureInfo.InvariantCulture)])!;
        kill.WaitForExit();
        if (!stats.TryTake(out (long Alloc, double CpuMs) s, TimeSpan.FromSeconds(10)))
        {
            throw new TimeoutException("the server did not answer SIGHUP with its STATS line");
        }

        return s;
    }

    /// <summary>Requests the variant's own metrics counted on the benchmark routes (never the scrape endpoint).</summary>
    private static long Scraped(HttpClient client, string variant)
    {
        if (variant == "none")
        {
            return -1;
        }

        string text = client.GetStringAsync("/metrics").GetAwaiter().GetResult();
        string name = variant == "promnet" ? "http_request_duration_seconds_count{" : "http_server_request_duration_seconds_count{";
        double total = 0;
        foreach (string line in text.Split('\n'))
        {
            if (line.StartsWith(name, StringComparison.Ordinal) && (line.Contains("/items/{id:int}", StringComparison.Ordinal) || line.Contains("/missing/{id}", StringComparison.Ordinal) || line.Contains("/fail", StringComparison.Ordinal)))
            {
                total += double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
            }
        }

        return (long)total;
    }

    private static WrkResult Wrk(int threads, int connections, int seconds, string? lua, string url)
    {
        var psi = new ProcessStartInfo("wrk") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { $"-t{threads}", $"-c{connections}", $"-d{seconds}s", "--latency" })
        {
            psi.ArgumentList.Add(a);
        }

        if (lua is not null)
        {
            psi.ArgumentList.Add("-s");
            psi.ArgumentList.Add(lua);
        }

        psi.ArgumentList.Add(url);
        using Process wrk = Process.Start(psi)!;
        string output = wrk.StandardOutput.ReadToEnd() + wrk.StandardError.ReadToEnd();
        wrk.WaitForExit();
        Match total = TotalRequests().Match(output);
        Match rps = Rps().Match(output);
        if (!total.Success || !rps.Success)
        {
            throw new InvalidOperationException("could not read wrk's output:\n" + output);
        }

        Match non2xx = Non2xx().Match(output);
        return new WrkResult(
            double.Parse(rps.Groups[1].Value, CultureInfo.InvariantCulture),
            Percentile(output, "50%"),
            Percentile(output, "99%"),
            long.Parse(total.Groups[1].Value, CultureInfo.InvariantCulture),
            non2xx.Success ? long.Parse(non2xx.Groups[1].Value, CultureInfo.InvariantCulture) : 0);
    }

    private static double Percentile(string output, string label)
    {
        Match m = Regex.Match(output, $@"^\s+{Regex.Escape(label)}\s+([\d.]+)(us|ms|s)\s*$", RegexOptions.Multiline);
        if (!m.Success)
        {
            return double.NaN;
        }

        double v = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        return m.Groups[2].Value switch { "us" => v / 1000, "s" => v * 1000, _ => v };
    }

    internal static void WaitReady(HttpClient client)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            try
            {
                using HttpResponseMessage r = client.GetAsync("/items/1").GetAwaiter().GetResult();
                if (r.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
            }

            Thread.Sleep(100);
        }

        throw new TimeoutException("the benchmark app did not start");
    }

    internal static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }



    [GeneratedRegex(@"(\d+) requests in")]
    private static partial Regex TotalRequests();

    [GeneratedRegex(@"Requests/sec:\s+([\d.]+)")]
    private static partial Regex Rps();

    [GeneratedRegex(@"Non-2xx or 3xx responses:\s+(\d+)")]
    private static partial Regex Non2xx();

    internal sealed record Row(int Round, string Shape, string Variant, double Rps, double P50, double P99, long Requests, long Non2xx, double CpuUsPerRequest, double AllocPerRequest, long Scraped);

    private sealed record WrkResult(double Rps, double P50, double P99, long Requests, long Non2xx);
}
