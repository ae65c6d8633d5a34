using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace PerCpu.AspNetCore.Tests;

/// <summary>The sample service as its own process on real Kestrel (127.0.0.1, a free port), stopped on dispose.</summary>
internal sealed class SampleProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private SampleProcess(Process process, int port)
    {
        _process = process;
        Port = port;
        BaseAddress = new Uri($"http://127.0.0.1:{port}");
    }

    public int Port { get; }

    public Uri BaseAddress { get; }

    public int ProcessId => _process.Id;

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    public static Task<SampleProcess> StartAsync(IReadOnlyDictionary<string, string>? environment = null) =>
        StartAsync(Path.Combine("samples", "WebApi"), "WebApi.dll", [], environment);

    /// <summary>tests/StackParityApp with <paramref name="stack"/> (<c>percpu</c> or <c>otel</c>) as its own process.</summary>
    public static Task<SampleProcess> StartParityAppAsync(string stack) =>
        StartAsync(Path.Combine("tests", "StackParityApp"), "StackParityApp.dll", ["--stack", stack], null);

    private static async Task<SampleProcess> StartAsync(string project, string dllName, string[] args, IReadOnlyDictionary<string, string>? environment)
    {
        int port = FreePort();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(AppDll(project, dllName));
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.ArgumentList.Add("--urls");
        psi.ArgumentList.Add($"http://127.0.0.1:{port}");
        psi.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        psi.Environment["Logging__LogLevel__Default"] = "Warning";
        psi.Environment["Sample__ConsoleExport"] = "false"; // a test that wants the console export turns it back on
        foreach ((string k, string v) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[k] = v;
        }

        var sample = new SampleProcess(Process.Start(psi)!, port);
        sample._process.OutputDataReceived += (_, e) => sample.Append(e.Data);
        sample._process.ErrorDataReceived += (_, e) => sample.Append(e.Data);
        sample._process.BeginOutputReadLine();
        sample._process.BeginErrorReadLine();

        using var client = new HttpClient { BaseAddress = sample.BaseAddress, Timeout = TimeSpan.FromSeconds(2) };
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(60))
        {
            if (sample._process.HasExited)
            {
                throw new InvalidOperationException("the sample exited during startup:\n" + sample.Output);
            }

            try
            {
                using HttpResponseMessage r = await client.GetAsync("/healthz");
                if (r.StatusCode == HttpStatusCode.OK)
                {
                    return sample;
                }
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException)
            {
            }

            await Task.Delay(100);
        }

        await sample.DisposeAsync();
        throw new TimeoutException("the sample did not answer /healthz within 60 s:\n" + sample.Output);
    }

    /// <summary>Request counts per "METHOD route status" from the sample's scrape.</summary>
    public async Task<Dictionary<string, double>> CountsAsync(HttpClient client)
    {
        Scrape scrape = Scrape.Parse(await client.GetStringAsync(new Uri(BaseAddress, "/metrics")));
        return scrape.Named("http_server_request_duration_seconds_count")
            .GroupBy(s => $"{s.Labels["http_request_method"]} {Scrape.RouteOf(s.Labels)} {s.Labels["http_response_status_code"]}")
            .ToDictionary(g => g.Key, g => g.Sum(s => s.Value));
    }

    /// <summary>Sends SIGTERM (what Kubernetes sends on every deploy) and waits up to <paramref name="limit"/> for the exit.</summary>
    /// <returns>The exit code (null: still running at the limit, then killed) and how long the stop took.</returns>
    public async Task<(int? ExitCode, TimeSpan Took)> TerminateAsync(TimeSpan limit)
    {
        var clock = Stopwatch.StartNew();
        Assert.Equal(0, Kill(_process.Id, 15));
        try
        {
            await _process.WaitForExitAsync().WaitAsync(limit);
            return (_process.ExitCode, clock.Elapsed);
        }
        catch (TimeoutException)
        {
            return (null, clock.Elapsed);
        }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }

        _process.Dispose();
    }

    internal static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>An app's build output (e.g. samples/WebApi) for the configuration this test assembly was built in.</summary>
    private static string AppDll(string project, string dllName)
    {
        string here = AppContext.BaseDirectory;
        string configuration = here.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}", StringComparison.Ordinal) ? "Release" : "Debug";
        var dir = new DirectoryInfo(here);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Solution.sln")))
        {
            dir = dir.Parent;
        }

        string dll = Path.Combine(dir?.FullName ?? throw new InvalidOperationException("repository root not found above " + here), project, "bin", configuration, "net10.0", dllName);
        return File.Exists(dll) ? dll : throw new FileNotFoundException("build the solution first", dll);
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }
    }
}
