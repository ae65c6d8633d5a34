using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using PerCpu.AspNetCore.Otlp;

namespace PerCpu.AspNetCore.Tests;

/// <summary>The collector faults an exporter meets in production.</summary>
public enum Fault
{
    Refused,
    AcceptAndHang,
    SlowAnswer,
    BadRequest400,
    TooLarge413,
    TooMany429RetryAfter0,
    TooMany429RetryAfter1,
    Unavailable503RetryAfter3600,
    Unavailable503RetryAfterDate,
    Unavailable503RetryAfterPastDate,
    Internal500,
    ResetMidBody,
    MalformedResponse,
    GzipCorruptedResponse,
    UnresolvableName,
}

/// <summary>
/// Fault injection against PerCpu's OTLP exporter: a loopback collector the test controls misbehaves in each way of
/// <see cref="Fault"/>. Each case asserts that an export ends within its timeout without throwing, how many attempts it
/// made, what was logged, that shutdown is bounded and never throws, and, after the collector recovers, that every
/// request's delta was delivered exactly once.
/// </summary>
public sealed class OtlpFaultTests
{
    private static readonly TimeSpan ExportTimeout = TimeSpan.FromSeconds(1.5);
    private static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(2);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [InlineData(Fault.Refused, true)]
    [InlineData(Fault.Refused, false)]
    [InlineData(Fault.AcceptAndHang, true)]
    [InlineData(Fault.AcceptAndHang, false)]
    [InlineData(Fault.SlowAnswer, true)]
    [InlineData(Fault.BadRequest400, true)]
    [InlineData(Fault.TooLarge413, true)]
    [InlineData(Fault.TooMany429RetryAfter0, true)]
    [InlineData(Fault.TooMany429RetryAfter1, true)]
    [InlineData(Fault.Unavailable503RetryAfter3600, true)]
    [InlineData(Fault.Unavailable503RetryAfter3600, false)]
    [InlineData(Fault.Unavailable503RetryAfterDate, true)]
    [InlineData(Fault.Unavailable503RetryAfterPastDate, true)]
    [InlineData(Fault.Internal500, true)]
    [InlineData(Fault.ResetMidBody, true)]
    [InlineData(Fault.MalformedResponse, true)]
    [InlineData(Fault.GzipCorruptedResponse, true)]
    [InlineData(Fault.UnresolvableName, false)]
    public async Task Fault_ExportBounded_ShutdownBounded_NothingLostAfterRecovery(Fault fault, bool recovers)
    {
        int port = SampleProcess.FreePort();
        Uri endpoint = fault == Fault.UnresolvableName ? new Uri("http://percpu-collector.invalid:4318/v1/metrics") : new Uri($"http://127.0.0.1:{port}/v1/metrics");
        await using Collector collector = await Collector.StartAsync(fault, port);
        TestApp app = await TestApp.StartAsync(builder: b =>
        {
            b.Logging.AddFakeLogging();
            b.Services.AddPerCpuOtlpExporter(o =>
            {
                o.Endpoint = endpoint;
                o.ExportInterval = TimeSpan.FromHours(1); // exports are triggered by the test
                o.ExportTimeout = ExportTimeout;
                o.ShutdownTimeout = ShutdownTimeout;
                o.RetryInitialBackoff = TimeSpan.FromMilliseconds(100);
                o.Temporality = OtlpTemporality.Delta;
                o.Gzip = fault == Fault.GzipCorruptedResponse;
            });
        });
        FakeLogCollector logs = app.App.Services.GetFakeLogCollector();
        OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();
        bool stopped = false;
        try
        {
            // 1. The fault: the export ends by itself, within its timeout, without throwing.
            await Requests(app, 5);
            var clock = Stopwatch.StartNew();
            bool sent = await exporter.ExportAsync(Ct);
            TimeSpan took = clock.Elapsed;
            Assert.True(took < ExportTimeout + TimeSpan.FromSeconds(1), $"{fault}: the export took {took.TotalSeconds:0.00} s");
            Assert.Equal(fault == Fault.TooLarge413, sent); // a split batch is delivered in parts; every other fault fails
            Assert.True(collector.Attempts <= MaxAttempts(fault), $"{fault}: {collector.Attempts} attempts");
            if (!sent)
            {
                Assert.Contains(logs.GetSnapshot(), r => r.Level == LogLevel.Warning && r.Message.Contains("PerCpu OTLP export", StringComparison.Ordinal));
                Assert.True(exporter.PendingSeries > 0, "the undelivered delta is kept for the next export");
            }

            // The app serves normally meanwhile.
            using (HttpResponseMessage r = await app.Client.GetAsync("/items/1", Ct))
            {
                Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            }

            // 2. Recovery (or not), then shutdown: bounded by ShutdownTimeout, never throwing.
            if (recovers)
            {
                await collector.RecoverAsync();
            }

            await Requests(app, 4);
            clock.Restart();
            await app.DisposeAsync();
            stopped = true;
            Assert.True(clock.Elapsed < ShutdownTimeout + TimeSpan.FromSeconds(2), $"{fault}: shutdown took {clock.Elapsed.TotalSeconds:0.00} s");

            if (recovers)
            {
                Assert.Equal(10, collector.DeliveredRequests()); // 5 + the request above + 4, each exactly once
            }
            else
            {
                Assert.Contains(logs.GetSnapshot(), r => r.Level == LogLevel.Warning && r.Message.Contains("could not deliver", StringComparison.Ordinal) && r.Message.Contains("holding 10 requests", StringComparison.Ordinal));
            }

            Assert.DoesNotContain(logs.GetSnapshot(), r => r.Message.Contains("failed while stopping", StringComparison.Ordinal));
        }
        finally
        {
            if (!stopped)
            {
                await app.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task TooLarge_SinglePointThatCannotBeSplit_DroppedAndSaid()
    {
        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync();
        receiver.Respond = _ => (413, [], []);
        TestApp app = await TestApp.StartAsync(builder: b =>
        {
            b.Logging.AddFakeLogging();
            b.Services.AddPerCpuOtlpExporter(o =>
            {
                o.Endpoint = receiver.Endpoint;
                o.ExportInterval = TimeSpan.FromHours(1);
                o.Temporality = OtlpTemporality.Delta;
            });
        });
        await using (app)
        {
            await Requests(app, 3);
            OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();
            Assert.True(await exporter.ExportAsync(Ct)); // "delivered" in the only way possible: dropped, and said
            Assert.Equal(0, exporter.PendingSeries);
            FakeLogRecord[] errors = [.. app.App.Services.GetFakeLogCollector().GetSnapshot().Where(r => r.Level == LogLevel.Error)];
            Assert.Contains(errors, r => r.Message.Contains("cannot be split further", StringComparison.Ordinal) && r.Message.Contains("(3 requests)", StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task RetryAfterBeyondTheTimeout_HoldsPeriodicExportsBack_WithoutLosingData()
    {
        await using OtlpReceiver receiver = await OtlpReceiver.StartAsync();
        receiver.Respond = n => n == 1 ? (429, new Dictionary<string, string> { ["Retry-After"] = "99999999" }, []) : (200, [], []);
        TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = receiver.Endpoint;
            o.ExportInterval = TimeSpan.FromHours(1);
            o.Temporality = OtlpTemporality.Delta;
        }));
        OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();
        await Requests(app, 7);
        var clock = Stopwatch.StartNew();
        Assert.False(await exporter.ExportAsync(Ct)); // a Retry-After of 3 years ends the export at once
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"took {clock.Elapsed.TotalSeconds:0.00} s");
        await Requests(app, 2);
        Assert.False(await exporter.ExportAsync(Ct)); // held back: not even sent
        Assert.Single(receiver.Requests);

        await app.DisposeAsync(); // the final export is not held back
        Assert.Equal(9, receiver.Accepted.Sum(b => DeltaCount(b)));
    }

    [Fact]
    public async Task HugeResponseBodies_AreNotRead()
    {
        // A raw collector that answers 200 with a 200 MB body and counts what the socket takes: the socket can only take
        // more than its buffers hold if the exporter reads.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        long written = 0;
        using var stop = new CancellationTokenSource();
        Task server = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                using TcpClient client = await listener.AcceptTcpClientAsync(stop.Token);
                NetworkStream stream = client.GetStream();
                _ = await stream.ReadAsync(new byte[64 * 1024], stop.Token);
                await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 209715200\r\n\r\n"u8.ToArray(), stop.Token);
                byte[] block = new byte[64 * 1024];
                try
                {
                    for (int i = 0; i < 200 * 16; i++)
                    {
                        await stream.WriteAsync(block, stop.Token).AsTask().WaitAsync(TimeSpan.FromSeconds(2), stop.Token);
                        Interlocked.Add(ref written, block.Length);
                    }
                }
                catch (Exception ex) when (ex is IOException or TimeoutException or SocketException)
                {
                    // the exporter closed the connection, or stopped reading: the rest of the body was never taken
                }
            }
        }, CancellationToken.None);
        await using (TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = new Uri($"http://127.0.0.1:{port}/v1/metrics");
            o.ExportInterval = TimeSpan.FromHours(1);
        })))
        {
            await Requests(app, 2);
            OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();
            for (int i = 0; i < 3; i++)
            {
                Assert.True(await exporter.ExportAsync(Ct));
            }
        }

        await Task.Delay(2500, Ct);
        await stop.CancelAsync();
        listener.Stop();
        await server.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing | ConfigureAwaitOptions.ContinueOnCapturedContext);
        Assert.True(Interlocked.Read(ref written) < 3 * 16 * 1024 * 1024, $"the exporter took {Interlocked.Read(ref written) / 1e6:0.0} MB of answers");
    }

    [Fact]
    public async Task CollectorDown60Seconds_ThenBack_EveryDeltaDeliveredExactlyOnce_MemoryBounded()
    {
        int port = SampleProcess.FreePort();
        TestApp app = await TestApp.StartAsync(builder: b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Endpoint = new Uri($"http://127.0.0.1:{port}/v1/metrics");
            o.ExportInterval = TimeSpan.FromMilliseconds(500);
            o.ExportTimeout = TimeSpan.FromSeconds(1);
            o.RetryInitialBackoff = TimeSpan.FromMilliseconds(100);
            o.Temporality = OtlpTemporality.Delta;
            o.ExponentialHistogram = true;
        }));
        OtlpReceiver? receiver = null;
        try
        {
            OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();
            string[] paths = ["/items/1", "/status/404", "/status/503", "/nowhere"];
            int sent = 0, maxPending = 0;
            var outage = Stopwatch.StartNew();
            while (outage.Elapsed < TimeSpan.FromSeconds(60))
            {
                for (int i = 0; i < 8; i++)
                {
                    using HttpResponseMessage r = await app.Client.GetAsync(paths[sent % paths.Length], Ct);
                    sent++;
                }

                maxPending = Math.Max(maxPending, exporter.PendingSeries);
                await Task.Delay(100, Ct);
            }

            receiver = await OtlpReceiver.StartAsync(port);
            for (int i = 0; i < 40; i++)
            {
                using HttpResponseMessage r = await app.Client.GetAsync(paths[sent % paths.Length], Ct);
                sent++;
            }

            Scrape scrape = await app.ScrapeAsync();
            double scraped = scrape.Named("http_server_request_duration_seconds_count").Sum(s => s.Value);
            Assert.Equal(sent, scraped);

            var clock = Stopwatch.StartNew();
            while (receiver.Accepted.Sum(b => DeltaCount(b)) < sent && clock.Elapsed < TimeSpan.FromSeconds(10))
            {
                await Task.Delay(100, Ct);
            }

            Assert.Equal(sent, receiver.Accepted.Sum(b => DeltaCount(b)));
            Assert.InRange(maxPending, 1, 4); // one pending delta per series (4 here), however long the outage
        }
        finally
        {
            await app.DisposeAsync();
            if (receiver is not null)
            {
                await receiver.DisposeAsync();
            }
        }
    }

    [Theory]
    [InlineData("refused")]
    [InlineData("503-retry-after-3600")]
    [InlineData("accept-and-hang")]
    public async Task Sample_SigtermWithCollectorDown_ExitsCleanlyWithinTheShutdownTimeout(string collector)
    {
        int port = SampleProcess.FreePort();
        using var raw = collector == "accept-and-hang" ? new TcpListener(IPAddress.Loopback, port) : null;
        raw?.Start(); // accepts connections into its backlog and never answers
        await using OtlpReceiver? receiver = collector == "503-retry-after-3600" ? await OtlpReceiver.StartAsync(port) : null;
        if (receiver is not null)
        {
            receiver.Respond = _ => (503, new Dictionary<string, string> { ["Retry-After"] = "3600" }, []);
        }

        await using SampleProcess sample = await SampleProcess.StartAsync(new Dictionary<string, string>
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = $"http://127.0.0.1:{port}",
            ["OTEL_METRIC_EXPORT_INTERVAL"] = "1000",
            ["Sample__OtlpExporter"] = "percpu",
            ["Logging__LogLevel__Default"] = "Information",
        });
        using var client = new HttpClient { BaseAddress = sample.BaseAddress };
        for (int i = 0; i < 20; i++)
        {
            using HttpResponseMessage r = await client.GetAsync("/items/" + i, Ct);
        }

        await Task.Delay(1500, Ct); // at least one periodic export has met the fault

        (int? exitCode, TimeSpan took) = await sample.TerminateAsync(TimeSpan.FromSeconds(30));
        Assert.True(exitCode == 0, $"exit code {exitCode?.ToString(CultureInfo.InvariantCulture) ?? "none"} after {took.TotalSeconds:0.0} s:\n{sample.Output}");
        Assert.True(took < TimeSpan.FromSeconds(10), $"shutdown took {took.TotalSeconds:0.0} s (ShutdownTimeout 5 s):\n{sample.Output}");
        Assert.DoesNotContain("Unhandled exception", sample.Output, StringComparison.Ordinal);
        Assert.Contains("could not deliver", sample.Output, StringComparison.Ordinal);
    }

    private static int MaxAttempts(Fault fault) => fault switch
    {
        // A Retry-After reaching past the deadline ends the export after one attempt.
        Fault.Unavailable503RetryAfter3600 or Fault.Unavailable503RetryAfterDate => 1,
        Fault.TooMany429RetryAfter1 => 2, // at 0 s and 1 s; a third would start after the 1.5 s deadline
        Fault.BadRequest400 or Fault.Internal500 or Fault.SlowAnswer or Fault.GzipCorruptedResponse => 1,
        Fault.TooLarge413 => 3, // the whole batch, then its two halves

        // Backoff 100, 200, 400, 800 ms (±20%) within 1.5 s: at most 5 attempts, whatever Retry-After says.
        _ => 5,
    };

    private static async Task Requests(TestApp app, int n)
    {
        for (int i = 0; i < n; i++)
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/items/" + i, Ct);
        }
    }

    /// <summary>The request count of http.server.request.duration in one accepted delta export.</summary>
    internal static long DeltaCount(byte[] body)
    {
        JsonElement request = OtlpReceiver.Decode(body);
        long total = 0;
        foreach (JsonElement metric in request.GetProperty("resourceMetrics")[0].GetProperty("scopeMetrics")[0].GetProperty("metrics").EnumerateArray())
        {
            if (metric.GetProperty("name").GetString() != "http.server.request.duration")
            {
                continue;
            }

            JsonElement data = metric.TryGetProperty("exponentialHistogram", out JsonElement e) && e.ValueKind == JsonValueKind.Object ? e : metric.GetProperty("histogram");
            Assert.Equal("AGGREGATION_TEMPORALITY_DELTA", data.GetProperty("aggregationTemporality").GetString());
            total += data.GetProperty("dataPoints").EnumerateArray().Sum(p => long.Parse(p.GetProperty("count").GetString()!, CultureInfo.InvariantCulture));
        }

        return total;
    }

    /// <summary>A loopback collector that misbehaves as told until <see cref="RecoverAsync"/>, then accepts everything.</summary>
    private sealed class Collector : IAsyncDisposable
    {
        private readonly Fault _fault;
        private readonly int _port;
        private readonly CancellationTokenSource _stop = new();
        private OtlpReceiver? _receiver;
        private TcpListener? _raw;
        private Task? _rawLoop;
        private volatile bool _recovered;
        private int _rawAttempts;
        private int _interceptedAttempts;

        private Collector(Fault fault, int port)
        {
            _fault = fault;
            _port = port;
        }

        public int Attempts => (_receiver?.Requests.Count ?? 0) + _interceptedAttempts + _rawAttempts;

        public static async Task<Collector> StartAsync(Fault fault, int port)
        {
            var c = new Collector(fault, port);
            switch (fault)
            {
                case Fault.Refused or Fault.UnresolvableName:
                    break;
                case Fault.AcceptAndHang or Fault.MalformedResponse:
                    c.StartRaw();
                    break;
                default:
                    c._receiver = await OtlpReceiver.StartAsync(port);
                    c.Configure();
                    break;
            }

            return c;
        }

        public async Task RecoverAsync()
        {
            _recovered = true;
            if (_raw is not null)
            {
                await _stop.CancelAsync();
                _raw.Stop();
                await _rawLoop!.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                _raw = null;
            }

            _receiver ??= await OtlpReceiver.StartAsync(_port);
        }

        public long DeliveredRequests() => _receiver?.Accepted.Sum(b => DeltaCount(b)) ?? 0;

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _raw?.Stop();
            if (_rawLoop is not null)
            {
                await _rawLoop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }

            if (_receiver is not null)
            {
                await _receiver.DisposeAsync();
            }

            _stop.Dispose();
        }

        private void Configure()
        {
            OtlpReceiver r = _receiver!;
            r.Intercept = async (n, context) =>
            {
                if (_recovered)
                {
                    return false;
                }

                switch (_fault)
                {
                    case Fault.SlowAnswer:
                        Interlocked.Increment(ref _interceptedAttempts);
                        await Task.Delay(TimeSpan.FromSeconds(4), context.RequestAborted).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                        return true;
                    case Fault.ResetMidBody:
                        Interlocked.Increment(ref _interceptedAttempts);
                        byte[] some = new byte[16];
                        _ = await context.Request.Body.ReadAsync(some, context.RequestAborted);
                        context.Abort();
                        return true;
                    default:
                        return false;
                }
            };
            string date = DateTimeOffset.UtcNow.AddHours(1).ToString("R", CultureInfo.InvariantCulture);
            string past = DateTimeOffset.UtcNow.AddHours(-1).ToString("R", CultureInfo.InvariantCulture);
            r.Respond = n => _recovered ? (200, [], []) : _fault switch
            {
                Fault.BadRequest400 => (400, [], Encoding.UTF8.GetBytes("bad request")),
                Fault.TooLarge413 => (200, [], []),
                Fault.TooMany429RetryAfter0 => (429, new Dictionary<string, string> { ["Retry-After"] = "0" }, []),
                Fault.TooMany429RetryAfter1 => (429, new Dictionary<string, string> { ["Retry-After"] = "1" }, []),
                Fault.Unavailable503RetryAfter3600 => (503, new Dictionary<string, string> { ["Retry-After"] = "3600" }, []),
                Fault.Unavailable503RetryAfterDate => (503, new Dictionary<string, string> { ["Retry-After"] = date }, []),
                Fault.Unavailable503RetryAfterPastDate => (503, new Dictionary<string, string> { ["Retry-After"] = past }, []),
                Fault.Internal500 => (500, [], []),
                Fault.GzipCorruptedResponse => (400, new Dictionary<string, string> { ["Content-Encoding"] = "gzip" }, [0x1f, 0x8b, 0xde, 0xad, 0xbe, 0xef]),
                _ => (200, [], []),
            };
            if (_fault == Fault.TooLarge413)
            {
                // A collector whose size limit is just below the first request: the whole batch is refused with 413,
                // its halves are accepted.
                long limit = long.MaxValue;
                r.Intercept = async (n, context) =>
                {
                    long size = context.Request.ContentLength ?? 0;
                    if (n == 1)
                    {
                        limit = size - 1;
                    }

                    if (_recovered || size <= limit)
                    {
                        return false;
                    }

                    Interlocked.Increment(ref _interceptedAttempts);
                    await context.Request.Body.CopyToAsync(Stream.Null);
                    context.Response.StatusCode = 413;
                    return true;
                };
            }
        }

        private void StartRaw()
        {
            _raw = new TcpListener(IPAddress.Loopback, _port);
            _raw.Start();
            CancellationToken stop = _stop.Token;
            _rawLoop = Task.Run(async () =>
            {
                var open = new List<TcpClient>();
                try
                {
                    while (!stop.IsCancellationRequested)
                    {
                        TcpClient client = await _raw.AcceptTcpClientAsync(stop);
                        Interlocked.Increment(ref _rawAttempts);
                        open.Add(client);
                        if (_fault == Fault.MalformedResponse)
                        {
                            NetworkStream s = client.GetStream();
                            byte[] some = new byte[256];
                            _ = await s.ReadAsync(some, stop);
                            await s.WriteAsync("NOT-HTTP garbage \0\r\n\r\n"u8.ToArray(), stop);
                            client.Close();
                        }

                        // AcceptAndHang: keep the connection open and never answer.
                    }
                }
                finally
                {
                    foreach (TcpClient c in open)
                    {
                        c.Dispose();
                    }
                }
            }, CancellationToken.None);
        }
    }
}
