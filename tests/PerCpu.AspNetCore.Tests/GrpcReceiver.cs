using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// A real OTLP/gRPC receiver: tests/otlp-decoder/grpc-receiver.js on grpc-js, serving <c>MetricsService/Export</c> with
/// OpenTelemetry JS's definitions generated from the official protos, answering each call as the answers say (the last
/// one repeated). Every call it received is in <see cref="Calls"/>, decoded.
/// </summary>
internal sealed class GrpcReceiver : IAsyncDisposable
{
    private readonly Process _node;
    private readonly TaskCompletionSource<int> _port = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<string> _errors = [];

    private GrpcReceiver(Process node)
    {
        _node = node;
    }

    /// <summary>The server, as an OTLP gRPC endpoint (scheme, host, port).</summary>
    public Uri Endpoint { get; private set; } = null!;

    /// <summary>Each call: the answer given, the metadata PerCpu sent and the decoded request.</summary>
    public ConcurrentQueue<(DateTimeOffset At, JsonElement Call)> Calls { get; } = new();

    public static async Task<GrpcReceiver> StartAsync(params string[] answers)
    {
        string dir = Path.Combine(OtlpReceiver.RepositoryRoot(), "tests", "otlp-decoder");
        if (!Directory.Exists(Path.Combine(dir, "node_modules", "@grpc", "grpc-js")))
        {
            Assert.True(Environment.GetEnvironmentVariable("PERCPU_REQUIRE_TOOLS") != "1", "tests/otlp-decoder has no @grpc/grpc-js: eng/test.sh runs npm ci there");
            Assert.Skip("run `npm ci --prefix tests/otlp-decoder` (eng/test.sh does) for the gRPC receiver");
        }

        var psi = new ProcessStartInfo("node") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = dir };
        psi.ArgumentList.Add("grpc-receiver.js");
        foreach (string a in answers)
        {
            psi.ArgumentList.Add(a);
        }

        var receiver = new GrpcReceiver(Process.Start(psi)!);
        receiver._node.OutputDataReceived += (_, e) => receiver.Line(e.Data);
        receiver._node.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (receiver._errors)
                {
                    receiver._errors.Add(e.Data);
                }
            }
        };
        receiver._node.BeginOutputReadLine();
        receiver._node.BeginErrorReadLine();
        int port = await receiver._port.Task.WaitAsync(TimeSpan.FromSeconds(30));
        receiver.Endpoint = new Uri($"http://127.0.0.1:{port}");
        return receiver;
    }

    /// <summary>Waits until <paramref name="count"/> calls arrived (at most 30 s).</summary>
    public async Task WaitForCallsAsync(int count)
    {
        for (var clock = Stopwatch.StartNew(); Calls.Count < count && clock.Elapsed < TimeSpan.FromSeconds(30);)
        {
            await Task.Delay(20);
        }

        Assert.True(Calls.Count >= count, $"{Calls.Count} of {count} gRPC calls arrived; receiver errors: {string.Join("\n", _errors)}");
    }

    /// <summary>
    /// The calls received once at least <paramref name="count"/> have been read from the receiver's output (at most
    /// 30 s), and a moment longer, so that a call beyond the expected ones shows too. The receiver prints each call
    /// before it answers, but its output is read here asynchronously, so it can trail the answer that PerCpu saw.
    /// </summary>
    public async Task<(DateTimeOffset At, JsonElement Call)[]> ReceivedAsync(int count)
    {
        await WaitForCallsAsync(count);
        await Task.Delay(200);
        return [.. Calls];
    }

    public async ValueTask DisposeAsync()
    {
        if (!_node.HasExited)
        {
            _node.Kill(entireProcessTree: true);
            await _node.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }

        _node.Dispose();
    }

    private void Line(string? line)
    {
        if (line is null)
        {
            return;
        }

        if (line.StartsWith("PORT ", StringComparison.Ordinal))
        {
            _port.TrySetResult(int.Parse(line.AsSpan(5), System.Globalization.CultureInfo.InvariantCulture));
        }
        else if (line.StartsWith("CALL ", StringComparison.Ordinal))
        {
            Calls.Enqueue((DateTimeOffset.UtcNow, JsonDocument.Parse(line.AsMemory(5)).RootElement.Clone()));
        }
    }
}
