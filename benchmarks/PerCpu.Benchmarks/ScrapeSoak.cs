using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using PerCpu.Families;

namespace PerCpu.Benchmarks;

/// <summary>
/// The slow-reader soak of issue 24: a server process (this program with <c>--serve</c>) exposes a registry of about
/// 8.5 MB of text; 30 readers arrive 0.5 s apart and take one byte every 100 ms, and 200 scrapes start at once 5 s
/// in. The server's RSS (VmRSS from /proc) is sampled every 250 ms for 65 s; the slow readers still connected are
/// counted at 30 s and 60 s, and the server's own count of scrapes cut at the deadline is read at the end. Usage: <c>scrapesoak [--series 110000] [--seconds 65]</c>.
/// </summary>
internal static class ScrapeSoak
{
    public static int Run(string[] args)
    {
        int series = int.Parse(Statistics.Arg(args, "--series", "110000"), CultureInfo.InvariantCulture);
        if (args.Contains("--serve"))
        {
            return Serve(series);
        }

        int seconds = int.Parse(Statistics.Arg(args, "--seconds", "65"), CultureInfo.InvariantCulture);
        var psi = new ProcessStartInfo(Environment.ProcessPath!, [.. Environment.GetCommandLineArgs().Skip(1).Where(a => a != "scrapesoak"), "scrapesoak", "--serve", "--series", series.ToString(CultureInfo.InvariantCulture)])
        {
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
        };
        if (psi.FileName.EndsWith("dotnet", StringComparison.Ordinal))
        {
            psi.ArgumentList.Insert(0, typeof(ScrapeSoak).Assembly.Location);
        }

        using Process server = Process.Start(psi)!;
        try
        {
            string url = server.StandardOutput.ReadLine() ?? throw new InvalidOperationException("the server printed nothing");
            return Soak(server.Id, new Uri(url.Replace("LISTENING ", "", StringComparison.Ordinal) + "/metrics"), seconds).GetAwaiter().GetResult();
        }
        finally
        {
            server.Kill(entireProcessTree: true);
        }
    }

    private static int Serve(int series)
    {
        WebApplicationBuilder b = WebApplication.CreateSlimBuilder();
        b.WebHost.UseUrls("http://127.0.0.1:0");
        b.Logging.ClearProviders();
        b.Services.AddPerCpuMetrics(o => o.MaxSeriesPerMetric = series + 10);
        WebApplication app = b.Build();
        app.UsePerCpuMetrics();
        app.MapPerCpuMetrics();
        CounterFamily family = app.Services.GetRequiredService<MetricRegistry>().CreateCounter("soak.family", null, null, "key", "shard");
        for (int i = 0; i < series; i++)
        {
            family.WithLabels($"a-label-value-of-a-realistic-length-{i:D8}", (i % 16).ToString(CultureInfo.InvariantCulture)).Increment();
        }

        app.StartAsync().GetAwaiter().GetResult();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Console.WriteLine("LISTENING " + address);
        Console.In.ReadToEnd(); // until the parent goes
        return 0;
    }

    private static async Task<int> Soak(int pid, Uri uri, int seconds)
    {
        using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 256 }) { Timeout = TimeSpan.FromSeconds(120) };
        long bytes = 0;
        for (int i = 0; i < 3; i++)
        {
            bytes = (await client.GetByteArrayAsync(uri)).Length; // warm-up
        }

        long before = Rss(pid);
        var clock = Stopwatch.StartNew();
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
        int connected = 0, readersRefused = 0;
        var readers = Enumerable.Range(0, 30).Select(async i =>
        {
            await Task.Delay(i * 500);
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
            await socket.ConnectAsync(uri.Host, uri.Port);
            await socket.SendAsync(Encoding.ASCII.GetBytes($"GET {uri.AbsolutePath} HTTP/1.1\r\nHost: {uri.Authority}\r\n\r\n"), SocketFlags.None);
            Interlocked.Increment(ref connected);
            byte[] one = new byte[1];
            var head = new StringBuilder();
            try
            {
                while (!stop.IsCancellationRequested && await socket.ReceiveAsync(one, SocketFlags.None, stop.Token) > 0)
                {
                    if (head.Length < 12 && head.Append((char)one[0]).Length == 12 && head.ToString() != "HTTP/1.1 200")
                    {
                        Interlocked.Increment(ref readersRefused); // answered 503 at once: it holds no scrape
                        break;
                    }

                    await Task.Delay(100, stop.Token);
                }
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException)
            {
            }

            Interlocked.Decrement(ref connected);
        }).ToArray();

        int ok = 0, refused = 0, failed = 0;
        Task burst = Task.Run(async () =>
        {
            await Task.Delay(5000);
            await Task.WhenAll(Enumerable.Range(0, 200).Select(async _ =>
            {
                try
                {
                    using HttpResponseMessage r = await client.GetAsync(uri, HttpCompletionOption.ResponseHeadersRead);
                    await (await r.Content.ReadAsStreamAsync()).CopyToAsync(Stream.Null);
                    if (r.IsSuccessStatusCode)
                    {
                        Interlocked.Increment(ref ok);
                    }
                    else if (r.StatusCode == System.Net.HttpStatusCode.ServiceUnavailable)
                    {
                        Interlocked.Increment(ref refused);
                    }
                    else
                    {
                        Interlocked.Increment(ref failed);
                    }
                }
                catch (HttpRequestException)
                {
                    Interlocked.Increment(ref failed);
                }
            }));
        });

        long peak = before, at30 = 0, at60 = 0;
        int connected30 = -1, connected60 = -1;
        while (!stop.IsCancellationRequested)
        {
            await Task.Delay(250);
            long rss = Rss(pid);
            peak = Math.Max(peak, rss);
            double t = clock.Elapsed.TotalSeconds;
            if (t >= 30 && connected30 < 0)
            {
                (at30, connected30) = (rss, Volatile.Read(ref connected));
            }

            if (t >= 60 && connected60 < 0)
            {
                (at60, connected60) = (rss, Volatile.Read(ref connected));
            }
        }

        await burst;
        await Task.WhenAll(readers);
        string after = await client.GetStringAsync(uri);
        string cut = after.Split('\n').FirstOrDefault(l => l.StartsWith("percpu_scrapes_cut_total ", StringComparison.Ordinal))?.Split(' ')[1] ?? "?";
        string refusedTotal = after.Split('\n').FirstOrDefault(l => l.StartsWith("percpu_scrapes_refused_total ", StringComparison.Ordinal))?.Split(' ')[1] ?? "?";
        Console.WriteLine($"# scrapesoak: {bytes / 1e6:F1} MB scrape, 30 slow readers (1 byte / 100 ms, 0.5 s apart), 200 concurrent scrapes at 5 s; {Environment.ProcessorCount} CPUs");
        Console.WriteLine("| server RSS before | peak | peak - before | at 30 s | at 60 s | slow readers connected at 30 s / 60 s | slow readers answered 503 | burst: 200 OK / 503 / failed | server: scrapes cut / refused |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---|---|");
        Console.WriteLine($"| {before / 1e6:F0} MB | {peak / 1e6:F0} MB | {(peak - before) / 1e6:F0} MB | {at30 / 1e6:F0} MB | {at60 / 1e6:F0} MB | {connected30} / {connected60} | {readersRefused} | {ok} / {refused} / {failed} | {cut} / {refusedTotal} |");
        Console.WriteLine("(a reader cut off by the server still drains what the kernel had buffered for it, at its own pace: it shows as connected)");
        return 0;
    }

    /// <summary>VmRSS of a process, in bytes.</summary>
    private static long Rss(int pid)
    {
        foreach (string line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
            }
        }

        return 0;
    }
}
