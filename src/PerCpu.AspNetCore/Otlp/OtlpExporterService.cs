using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using PerCpu.AspNetCore.Internal;

namespace PerCpu.AspNetCore.Otlp;

/// <summary>
/// Exports the per-CPU store over OTLP/HTTP (protobuf) or OTLP/gRPC every interval, as a hosted service: it never runs on a request
/// thread and never blocks one, and exports never overlap (one gate). Retries 429/502/503/504 and network errors with
/// exponential backoff and jitter (a floor that a <c>Retry-After</c> of 0 or a past date cannot lower), within the
/// export timeout; a <c>Retry-After</c> that reaches beyond it ends the export at once and holds periodic exports back
/// (up to <see cref="MaxHoldBack"/>). The payload is encoded and compressed once per export, and the collector's answer
/// is read to its headers only, so a huge or corrupt response body costs nothing. A 413 splits the batch in halves
/// until the parts fit; a single point that still does not fit is dropped and logged. Memory stays bounded while the
/// collector is down: with cumulative temporality the next export carries the totals; with delta temporality every
/// point that was not delivered, whatever stopped it (an error answer, a timeout, cancellation, an exception), is
/// merged into one pending delta per series. Shutdown flushes once within <see cref="PerCpuOtlpExporterOptions.ShutdownTimeout"/>
/// and the host's shutdown token, never throws, and logs once what it could not deliver.
/// </summary>
internal sealed partial class OtlpExporterService : IHostedService, IDisposable
{
    /// <summary>The longest retry backoff.</summary>
    internal static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);

    /// <summary>The longest a collector's <c>Retry-After</c> holds periodic exports back (the data is kept meanwhile).</summary>
    internal static readonly TimeSpan MaxHoldBack = TimeSpan.FromMinutes(5);

    private readonly HttpMetricsStore _store;
    private readonly PerCpu.Families.MetricRegistry? _registry;
    private readonly PerCpuOtlpExporterOptions _options;
    private readonly IReadOnlyDictionary<string, string> _resource;
    private readonly TimeProvider _time;
    private readonly ILogger<OtlpExporterService> _logger;
    private readonly HttpClient _client;
    private readonly Uri _endpoint;
    private readonly Dictionary<RequestSeries, (HistogramSnapshot Snapshot, ulong Start)> _pending = [];
    private readonly SemaphoreSlim _exportGate = new(1, 1);
    private readonly ulong _processStart;
    private readonly FamilyDeltas? _familyDeltas; // delta temporality: what the registry's families last delivered
    private CancellationTokenSource? _stopping;
    private Task? _loop;
    private int _stopped;
    private ulong _lastCollect;
    private int _consecutiveFailures;
    private DateTimeOffset _holdBackUntil;

    public OtlpExporterService(HttpMetricsStore store, IOptions<PerCpuOtlpExporterOptions> options, TimeProvider time, ILogger<OtlpExporterService> logger, PerCpu.Families.MetricRegistry? registry = null)
    {
        _store = store;
        _registry = registry;
        _options = options.Value;
        _time = time;
        _logger = logger;
        _resource = Resource(_options);
        _endpoint = _options.Protocol != OtlpProtocol.Grpc ? _options.Endpoint!
            : OtlpGrpc.ExportUri(_options.EndpointIsDefault ? new Uri("http://localhost:4317") : _options.Endpoint!);
        // No automatic decompression and no body buffering: only the status line and headers of an answer are read.
        _client = new HttpClient(new SocketsHttpHandler
        {
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            AutomaticDecompression = DecompressionMethods.None,
            MaxResponseDrainSize = 64 * 1024,
        })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
        _processStart = _lastCollect = UnixNano(time.GetUtcNow());
        _familyDeltas = _options.Temporality == OtlpTemporality.Delta ? new FamilyDeltas(_processStart) : null;
    }

    /// <summary>Series whose delta waits for the next export (delta temporality); at most the series cap plus the overflow series.</summary>
    internal int PendingSeries
    {
        get
        {
            lock (_pending)
            {
                return _pending.Count;
            }
        }
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _stopping = new CancellationTokenSource();
        _loop = Task.Run(() => LoopAsync(_stopping.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    /// <summary>
    /// Stops the loop (an export in flight is cancelled and its data kept), then makes one final export bounded by
    /// <see cref="PerCpuOtlpExporterOptions.ShutdownTimeout"/>, <see cref="PerCpuOtlpExporterOptions.ExportTimeout"/> and
    /// <paramref name="cancellationToken"/>. Never throws.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_stopping is null || Interlocked.Exchange(ref _stopped, 1) == 1)
        {
            return;
        }

        try
        {
            await _stopping.CancelAsync().ConfigureAwait(false);
            if (_loop is not null)
            {
                await _loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }

            TimeSpan budget = _options.ShutdownTimeout < _options.ExportTimeout ? _options.ShutdownTimeout : _options.ExportTimeout;
            await ExportCoreAsync(budget, final: true, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            LogStopFailed(_logger, ex); // a metrics exporter must never fail a host's shutdown
        }
    }

    public void Dispose()
    {
        _stopping?.Dispose();
        _client.Dispose();
        _exportGate.Dispose();
    }

    /// <summary>One export: collect, encode, send (with retries). Returns whether the collector accepted all of it. Never throws.</summary>
    public Task<bool> ExportAsync(CancellationToken cancellationToken) => ExportCoreAsync(_options.ExportTimeout, final: false, cancellationToken);

    private async Task<bool> ExportCoreAsync(TimeSpan timeout, bool final, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        long started = _time.GetTimestamp();
        try
        {
            await _exportGate.WaitAsync(deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return false; // another export held the gate until the deadline: the data stays in the store for the next one
        }

        OtlpBatch? batch = null;
        List<HistogramPoint> unsent = [];
        bool othersSent = false;
        try
        {
            batch = Collect(UnixNano(_time.GetUtcNow()));
            unsent = [.. batch.Points];
            if (!final && _time.GetUtcNow() < _holdBackUntil)
            {
                LogHeldBack(_logger, _holdBackUntil);
            }
            else
            {
                (unsent, othersSent) = await SendBatchAsync(batch, new Deadline(started, timeout, deadline.Token), cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception ex)
        {
            // Cancellation (shutdown) and anything unexpected end the export; what it held is settled below, never lost.
            if (ex is not OperationCanceledException)
            {
                Failed("export failed: " + ex.Message, ex);
            }
        }
        finally
        {
            if (batch is not null)
            {
                Settle(batch, unsent, othersSent, final);
            }

            _exportGate.Release();
        }

        return batch is not null && othersSent && unsent.Count == 0;
    }

    /// <summary>
    /// After an export: delta points that were not delivered become the pending deltas of their series (merged into the
    /// next export); on the final export they are logged once, with their size, and dropped.
    /// </summary>
    private void Settle(OtlpBatch batch, List<HistogramPoint> unsent, bool othersSent, bool final)
    {
        bool delta = _options.Temporality == OtlpTemporality.Delta;
        _familyDeltas?.Settle(othersSent, final);
        lock (_pending)
        {
            _pending.Clear();
            if (final)
            {
                if (unsent.Count > 0 || !othersSent)
                {
                    LogDropped(_logger, unsent.Count, unsent.Sum(p => p.Snapshot.Count), othersSent ? 0 : batch.Families.Sum(f => f.Points.Count + f.Histograms.Count));
                }

                return;
            }

            if (delta)
            {
                foreach (HistogramPoint p in unsent)
                {
                    _pending[(RequestSeries)p.Key] = (p.Snapshot, p.StartUnixNano); // merged into the next export, not dropped
                }
            }
        }
    }

    private async Task LoopAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(_options.ExportInterval, _time, stopping).ConfigureAwait(false);
                await ExportCoreAsync(_options.ExportTimeout, final: false, stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
        }
    }

    private OtlpBatch Collect(ulong now)
    {
        var durations = new List<HistogramPoint>();
        bool delta = _options.Temporality == OtlpTemporality.Delta;
        lock (_pending)
        {
            foreach (RequestSeries series in _store.RecordedSeries())
            {
                if (!delta)
                {
                    HistogramSnapshot snapshot = series.Duration.Snapshot();
                    if (snapshot.Count > 0 || snapshot.Invalid > 0)
                    {
                        durations.Add(new HistogramPoint(series, series.SeriesLabels, snapshot, _processStart));
                    }

                    continue;
                }

                HistogramSnapshot change = series.Duration.CollectDelta();
                ulong start = _lastCollect;
                bool pending = _pending.Remove(series, out (HistogramSnapshot Snapshot, ulong Start) unsent);
                if (pending)
                {
                    change = unsent.Snapshot.Merge(change);
                    start = unsent.Start;
                }

                if (change.Count > 0 || change.Invalid > 0 || pending)
                {
                    durations.Add(new HistogramPoint(series, series.SeriesLabels, change, start));
                }
            }
        }

        _lastCollect = now; // the next deltas start here; undelivered ones keep their own start in _pending

        // Every other family goes through the writer: with delta temporality its counters and histograms as changes
        // (the HTTP store's and the app's families, the Meter API listener's), its up-down counters and gauges as totals.
        _familyDeltas?.Begin(now);
        return new OtlpBatch(now, _processStart, _options.Temporality, HttpMetricsProducer.Duration, durations,
            OtlpFamilyCollector.Collect(HttpMetricsProducer.Duration, _familyDeltas, _store.Producer, _registry));
    }

    /// <summary>The export's deadline: its token, and when it started, to tell how much time a retry would leave.</summary>
    private readonly record struct Deadline(long Started, TimeSpan Timeout, CancellationToken Token);

    private enum Outcome
    {
        Sent,
        TooLarge,
        Failed,
    }

    /// <summary>Sends a batch, splitting it on 413. Returns the duration points not delivered and whether the other metrics were.</summary>
    private async Task<(List<HistogramPoint> Unsent, bool OthersSent)> SendBatchAsync(OtlpBatch batch, Deadline deadline, CancellationToken stopping)
    {
        var parts = new Stack<OtlpBatch>();
        parts.Push(batch);
        bool othersSent = false;
        while (parts.TryPop(out OtlpBatch? part))
        {
            byte[] payload = Payload(OtlpMetricsEncoder.Encode(part, _resource, _options.ExponentialHistogram));
            switch (await SendAsync(payload, deadline, stopping).ConfigureAwait(false))
            {
                case Outcome.Sent:
                    othersSent |= part.WithOtherMetrics;
                    break;
                case Outcome.TooLarge when part.Points.Count > 1 || (part.Points.Count == 1 && part.WithOtherMetrics):
                    int half = part.Points.Count / 2;
                    parts.Push(part with { Points = [.. part.Points.Skip(half)], WithOtherMetrics = false });
                    parts.Push(part with { Points = [.. part.Points.Take(half)] });
                    LogSplit(_logger, payload.Length, part.Points.Count);
                    break;
                case Outcome.TooLarge:
                    // One point alone exceeds the collector's limit: no split can deliver it. Said, counted, dropped.
                    LogTooLargeDropped(_logger, payload.Length, part.Points.Count, part.Points.Sum(p => p.Snapshot.Count));
                    othersSent |= part.WithOtherMetrics;
                    break;
                default:
                    var unsent = new List<HistogramPoint>(part.Points);
                    foreach (OtlpBatch rest in parts)
                    {
                        unsent.AddRange(rest.Points);
                    }

                    return (unsent, othersSent);
            }
        }

        return ([], othersSent);
    }

    private async Task<Outcome> SendAsync(byte[] payload, Deadline deadline, CancellationToken stopping)
    {
        TimeSpan backoff = _options.RetryInitialBackoff;
        for (int attempt = 1; ; attempt++)
        {
            string problem;
            TimeSpan? retryAfter = null;
            try
            {
                using HttpRequestMessage request = Request(payload, deadline);
                using HttpResponseMessage response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline.Token).ConfigureAwait(false);
                if (_options.Protocol == OtlpProtocol.Grpc && response.StatusCode == HttpStatusCode.OK)
                {
                    // gRPC answers HTTP 200 and says how the call went in grpc-status (trailers, or a trailers-only answer).
                    (int code, string? message, TimeSpan? retryDelay) = await OtlpGrpc.StatusAsync(response, deadline.Token).ConfigureAwait(false);
                    if (code == (int)OtlpGrpc.Code.Ok)
                    {
                        Succeeded();
                        return Outcome.Sent;
                    }

                    problem = $"the collector answered gRPC status {code}{(message is null ? "" : " (" + message + ")")}";
                    if (code == (int)OtlpGrpc.Code.ResourceExhausted && retryDelay is null)
                    {
                        return Outcome.TooLarge; // over the server's message size limit: split, as for a 413
                    }

                    if (!OtlpGrpc.IsRetryable(code, retryDelay is not null))
                    {
                        Failed(problem + " (not retryable)", null);
                        return Outcome.Failed;
                    }

                    retryAfter = retryDelay; // RetryInfo: gRPC's Retry-After
                    goto Wait;
                }

                if (response.IsSuccessStatusCode)
                {
                    Succeeded();
                    return Outcome.Sent;
                }

                problem = $"the collector answered {(int)response.StatusCode} {response.ReasonPhrase}";
                if (response.StatusCode == HttpStatusCode.RequestEntityTooLarge)
                {
                    return Outcome.TooLarge;
                }

                if (response.StatusCode is not (HttpStatusCode.TooManyRequests or HttpStatusCode.BadGateway or HttpStatusCode.ServiceUnavailable or HttpStatusCode.GatewayTimeout))
                {
                    Failed(problem + " (not retryable)", null);
                    return Outcome.Failed;
                }

                retryAfter = RetryAfter(response.Headers.RetryAfter);
            }
            catch (OperationCanceledException) when (deadline.Token.IsCancellationRequested)
            {
                Failed(stopping.IsCancellationRequested ? "stopped while sending" : $"no answer within the export timeout of {deadline.Timeout.TotalSeconds:0.###} s", null);
                return Outcome.Failed;
            }
            catch (Exception ex) when (ex is HttpRequestException or IOException)
            {
                problem = "the collector is unreachable: " + ex.Message;
            }

        Wait:
            // The floor: the jittered backoff. Retry-After may lengthen the wait, never shorten it.
            TimeSpan delay = Jitter(backoff);
            if (retryAfter > delay)
            {
                delay = retryAfter.Value;
            }

            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, MaxBackoff.Ticks));
            TimeSpan left = deadline.Timeout - _time.GetElapsedTime(deadline.Started);
            if (delay >= left)
            {
                if (retryAfter >= left)
                {
                    _holdBackUntil = _time.GetUtcNow() + (retryAfter.Value < MaxHoldBack ? retryAfter.Value : MaxHoldBack);
                }

                Failed($"{problem}; the next try would be in {delay.TotalSeconds:0.###} s, after the export's deadline (attempt {attempt})", null);
                return Outcome.Failed;
            }

            LogRetry(_logger, problem, attempt, delay.TotalSeconds);
            try
            {
                await Task.Delay(delay, _time, deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Failed(problem + $"; gave up after {attempt} attempts " + (stopping.IsCancellationRequested ? "(stopped)" : "within the export timeout"), null);
                return Outcome.Failed;
            }
        }
    }

    /// <summary>The request body as sent: gzipped once per export (not per attempt) when <see cref="PerCpuOtlpExporterOptions.Gzip"/> is on.</summary>
    private byte[] Payload(byte[] body)
    {
        if (!_options.Gzip)
        {
            return body;
        }

        using var compressed = new MemoryStream();
        using (var gzip = new GZipStream(compressed, CompressionLevel.Fastest, leaveOpen: true))
        {
            gzip.Write(body);
        }

        return compressed.ToArray();
    }

    private HttpRequestMessage Request(byte[] payload, Deadline deadline)
    {
        HttpRequestMessage request;
        if (_options.Protocol == OtlpProtocol.Grpc)
        {
            request = OtlpGrpc.Request(_endpoint, payload, _options.Gzip, deadline.Timeout - _time.GetElapsedTime(deadline.Started));
        }
        else
        {
            request = new HttpRequestMessage(HttpMethod.Post, _endpoint) { Content = new ByteArrayContent(payload) };
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/x-protobuf");
            if (_options.Gzip)
            {
                request.Content.Headers.ContentEncoding.Add("gzip");
            }
        }

        request.Headers.TryAddWithoutValidation("User-Agent", UserAgent);
        foreach ((string name, string value) in _options.Headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        return request;
    }

    /// <summary>Sent with every export, as the OpenTelemetry exporters name themselves: <c>PerCpu-OTLP-Exporter-Dotnet/0.1.0</c>.</summary>
    internal static string UserAgent { get; } = "PerCpu-OTLP-Exporter-Dotnet/" + (typeof(OtlpExporterService).Assembly
        .GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
        .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion.Split('+')[0] ?? "0");

    private TimeSpan? RetryAfter(RetryConditionHeaderValue? header)
    {
        if (header?.Delta is TimeSpan delta)
        {
            return delta;
        }

        return header?.Date is DateTimeOffset date ? (date - _time.GetUtcNow()) is var d && d > TimeSpan.Zero ? d : TimeSpan.Zero : null;
    }

    private static TimeSpan Jitter(TimeSpan backoff) =>
        TimeSpan.FromTicks((long)(backoff.Ticks * (0.8 + (0.4 * Random.Shared.NextDouble()))));

    private void Succeeded()
    {
        if (_consecutiveFailures > 0)
        {
            LogRecovered(_logger, _consecutiveFailures, _endpoint);
            _consecutiveFailures = 0;
        }
    }

    /// <summary>The first failure of a run is a warning; repeats are debug until an export succeeds again.</summary>
    private void Failed(string problem, Exception? exception)
    {
        if (_consecutiveFailures++ == 0)
        {
            LogFailure(_logger, _endpoint, problem, exception);
        }
        else
        {
            LogRepeatedFailure(_logger, _consecutiveFailures, problem);
        }
    }

    private static Dictionary<string, string> Resource(PerCpuOtlpExporterOptions options)
    {
        var resource = new Dictionary<string, string>(options.ResourceAttributes, StringComparer.Ordinal)
        {
            ["telemetry.sdk.name"] = "percpu",
            ["telemetry.sdk.language"] = "dotnet",
            ["telemetry.sdk.version"] = typeof(OtlpExporterService).Assembly.GetName().Version?.ToString() ?? "",
        };
        resource["service.name"] = options.ServiceName ?? "unknown_service:" + System.Diagnostics.Process.GetCurrentProcess().ProcessName;
        return resource;
    }

    private static ulong UnixNano(DateTimeOffset t) => (ulong)(t - DateTimeOffset.UnixEpoch).Ticks * 100;

    [LoggerMessage(Level = LogLevel.Warning, Message = "PerCpu OTLP export to {Endpoint} failed: {Problem}. Metrics are kept and sent with the next export; repeats are logged at Debug until it recovers.")]
    private static partial void LogFailure(ILogger logger, Uri endpoint, string problem, Exception? exception);

    [LoggerMessage(Level = LogLevel.Debug, Message = "PerCpu OTLP export failed again ({Failures} in a row): {Problem}")]
    private static partial void LogRepeatedFailure(ILogger logger, int failures, string problem);

    [LoggerMessage(Level = LogLevel.Debug, Message = "PerCpu OTLP export: {Problem}; retry {Attempt} in {Seconds:0.###} s")]
    private static partial void LogRetry(ILogger logger, string problem, int attempt, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "PerCpu OTLP export: the final export on shutdown could not deliver {Series} duration series holding {Requests} requests and {OtherPoints} other points; they are dropped.")]
    private static partial void LogDropped(ILogger logger, int series, long requests, int otherPoints);

    [LoggerMessage(Level = LogLevel.Warning, Message = "PerCpu OTLP export: the collector answered 413 to {Bytes} bytes; split the batch of {Series} duration series in two.")]
    private static partial void LogSplit(ILogger logger, int bytes, int series);

    [LoggerMessage(Level = LogLevel.Error, Message = "PerCpu OTLP export: the collector answered 413 to {Bytes} bytes holding {Series} duration series ({Requests} requests), which cannot be split further; they are dropped. Raise the collector's request size limit.")]
    private static partial void LogTooLargeDropped(ILogger logger, int bytes, int series, long requests);

    [LoggerMessage(Level = LogLevel.Debug, Message = "PerCpu OTLP export held back until {Until} by the collector's Retry-After; metrics are kept.")]
    private static partial void LogHeldBack(ILogger logger, DateTimeOffset until);

    [LoggerMessage(Level = LogLevel.Error, Message = "PerCpu OTLP exporter failed while stopping; the host's shutdown goes on.")]
    private static partial void LogStopFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "PerCpu OTLP export recovered after {Failures} failed exports to {Endpoint}")]
    private static partial void LogRecovered(ILogger logger, int failures, Uri endpoint);
}
