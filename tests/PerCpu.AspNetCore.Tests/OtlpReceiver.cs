using System.Collections.Concurrent;
using System.Diagnostics;
using System.IO.Compression;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// A loopback OTLP/HTTP receiver on Kestrel: records each request body (gunzipped when sent with gzip) and answers as
/// <see cref="Respond"/> says for the n-th request (default 200 with an empty protobuf response).
/// </summary>
internal sealed class OtlpReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;

    private OtlpReceiver(WebApplication app, int port)
    {
        _app = app;
        Endpoint = new Uri($"http://127.0.0.1:{port}/v1/metrics");
    }

    public Uri Endpoint { get; }

    public ConcurrentQueue<(DateTimeOffset At, byte[] Body, string? Encoding, string? ContentType, string? Authorization)> Requests { get; } = new();

    /// <summary>The <c>User-Agent</c> of each request.</summary>
    public ConcurrentQueue<string> UserAgents { get; } = new();

    /// <summary>Bodies of the requests answered with a 2xx status: what the collector accepted.</summary>
    public ConcurrentQueue<byte[]> Accepted { get; } = new();

    /// <summary>
    /// Runs before <see cref="Respond"/> for the n-th request (1-based) once its body is read; returns true when it took
    /// over the answer (a hang, a reset, a slow answer).
    /// </summary>
    public Func<int, HttpContext, Task<bool>>? Intercept { get; set; }

    /// <summary>The n-th request (1-based) → status, extra headers and body.</summary>
    public Func<int, (int Status, Dictionary<string, string> Headers, byte[] Body)> Respond { get; set; } = _ => (200, [], []);

    public static async Task<OtlpReceiver> StartAsync(int? port = null)
    {
        int p = port ?? SampleProcess.FreePort();
        WebApplicationBuilder b = WebApplication.CreateSlimBuilder();
        b.WebHost.UseUrls($"http://127.0.0.1:{p}");
        b.Logging.ClearProviders();
        WebApplication app = b.Build();
        var receiver = new OtlpReceiver(app, p);
        int count = 0;
        app.MapPost("/v1/metrics", async (HttpContext context) =>
        {
            int n = Interlocked.Increment(ref count);
            if (receiver.Intercept is { } intercept && await intercept(n, context))
            {
                return;
            }

            using var buffer = new MemoryStream();
            Stream body = context.Request.Headers.ContentEncoding == "gzip" ? new GZipStream(context.Request.Body, CompressionMode.Decompress) : context.Request.Body;
            await body.CopyToAsync(buffer);
            receiver.UserAgents.Enqueue(context.Request.Headers.UserAgent.ToString());
            receiver.Requests.Enqueue((DateTimeOffset.UtcNow, buffer.ToArray(), context.Request.Headers.ContentEncoding, context.Request.ContentType, context.Request.Headers.Authorization));
            (int status, Dictionary<string, string> headers, byte[] reply) = receiver.Respond(n);
            if (status is >= 200 and < 300)
            {
                receiver.Accepted.Enqueue(buffer.ToArray());
            }

            context.Response.StatusCode = status;
            foreach ((string k, string v) in headers)
            {
                context.Response.Headers[k] = v;
            }

            context.Response.ContentType = "application/x-protobuf";
            await context.Response.Body.WriteAsync(reply);
        });
        await app.StartAsync();
        return receiver;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    /// <summary>Decodes a request body with OpenTelemetry JS's generated OTLP definitions (tests/otlp-decoder).</summary>
    public static JsonElement Decode(byte[] body) => RunDecoder("decode.js", Path.Combine("@opentelemetry", "otlp-transformer"), body, "the OpenTelemetry JS decoder");

    /// <summary>
    /// Runs one of the node decoders of tests/otlp-decoder on <paramref name="body"/> and parses the JSON it prints;
    /// skips (or fails, where the tools are required) when its npm package is not installed.
    /// </summary>
    public static JsonElement RunDecoder(string script, string package, byte[] body, string what)
    {
        string decoder = Path.Combine(RepositoryRoot(), "tests", "otlp-decoder", script);
        if (!Directory.Exists(Path.Combine(Path.GetDirectoryName(decoder)!, "node_modules", package)))
        {
            Assert.True(Environment.GetEnvironmentVariable("PERCPU_REQUIRE_TOOLS") != "1", "tests/otlp-decoder has no node_modules: eng/test.sh runs npm ci there");
            Assert.Skip("run `npm ci --prefix tests/otlp-decoder` (eng/test.sh does) to decode with " + what);
        }

        string file = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(file, body);
            var psi = new ProcessStartInfo("node") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            psi.ArgumentList.Add(decoder);
            psi.ArgumentList.Add(file);
            using Process node = Process.Start(psi)!;
            Task<string> stdout = node.StandardOutput.ReadToEndAsync();
            string stderr = node.StandardError.ReadToEnd();
            node.WaitForExit(30_000);
            Assert.True(node.ExitCode == 0, what + " rejected the input: " + stderr);
            return JsonDocument.Parse(stdout.Result).RootElement.Clone();
        }
        finally
        {
            File.Delete(file);
        }
    }

    internal static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Solution.sln")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("repository root not found");
    }
}
