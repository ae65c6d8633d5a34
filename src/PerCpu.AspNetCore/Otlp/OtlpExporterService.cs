using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using PerCpu.AspNetCore.Internal;

namespace PerCpu.AspNetCore.Otlp;

/// <summary>
/// Exports the per-CPU store over OTLP/HTTP (protobuf) every interval, as a hosted service: it never runs on a request
/// thread and never blocks one. Retries 429/502/503/504 and network errors with exponential backoff and jitter,
/// honouring <c>Retry-After</c>, within the export timeout. Memory stays bounded while the collector is down: with
/// cumulative temporality the next export carries the totals; with delta temporality unsent deltas are merged (one
/// pending delta per series). Flushes once on graceful shutdown, within the timeout.
/// </summary>
internal sealed partial class OtlpExporterService : IHostedService, IDisposable
{
    private readonly HttpMetricsStore _store;
    private readonly PerCpuOtlpExporterOptions _options;
    private readonly IReadOnlyDictionary<string, string> _resource;
    private readonly TimeProvider _time;
    private readonly ILogger<OtlpExporterService> _logger;
    private readonly HttpClient _client;
    private readonly Dictionary<RequestSeries, (HistogramSnapshot Snapshot, ulong Start)> _pending = [];
    private readonly SemaphoreSlim _exportGate = new(1, 1);
    private readonly ulong _processStart;
    private CancellationTokenSource? _stopping;
    private Task? _loop;
    private ulong _lastExport;
    private long _overflowSent;
    private int _consecutiveFailures;

    public OtlpExporterService(HttpMetricsStore store, IOptions<PerCpuOtlpExporterOptions> options, TimeProvider time, ILogger<OtlpExporterService> logger)
    {
        _store = store;
        _options = options.Value;
        _time = time;
        _logger = logger;
        _resource = Resource(_options);
        _client = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) }) { Timeout = Timeout.InfiniteTimeSpan };
        _processStart = _lastExport = UnixNano(time.GetUtcNow());
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _stopping = new CancellationTokenSource();
        _loop = Task.Run(() => LoopAsync(_stopping.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_stopping is null)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        if (_loop is not null)
        {
            await _loop.ConfigureAwait(false);
        }

        // The final flush: one export within the timeout (and within the host's shutdown budget).
        using var flush = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        await ExportAsync(flush.Token).ConfigureAwait(false);
    }

    public void Dispose()
    {
        _stopping?.Dispose();
        _client.Dispose();
        _exportGate.Dispose();
    }

    /// <summary>One export: collect, encode, send (with retries). Returns whether the collector accepted it.</summary>
    public async Task<bool> ExportAsync(CancellationToken cancellationToken)
    {
        await _exportGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ulong now = UnixNano(_time.GetUtcNow());
            OtlpBatch batch = Collect(now);
            byte[] body = OtlpMetricsEncoder.Encode(batch, _resource, _store.Layout, _options.ExponentialHistogram);
            bool sent = await SendAsync(body, cancellationToken).ConfigureAwait(false);
            if (_options.Temporality == OtlpTemporality.Delta)
            {
                if (sent)
                {
                    _pending.Clear();
                    _overflowSent += batch.OverflowRecords;
                    _lastExport = now;
                }
                else
                {
                    foreach (HistogramPoint p in batch.Durations)
                    {
                        _pending[p.Series] = (p.Snapshot, p.StartUnixNano); // merged into the next export, not dropped
                    }
                }
            }

            return sent;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // Never let an export failure escape into the host; it is logged like any other failure.
            Failed("export failed: " + ex.Message, ex);
            return false;
        }
        finally
        {
            _exportGate.Release();
        }
    }

    private async Task LoopAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(_options.ExportInterval, _time, stopping).ConfigureAwait(false);
                await ExportAsync(stopping).ConfigureAwait(false);
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
        foreach (RequestSeries series in _store.RecordedSeries())
        {
            if (_options.Temporality == OtlpTemporality.Cumulative)
            {
                HistogramSnapshot snapshot = series.Duration.Snapshot();
                if (snapshot.Count > 0 || snapshot.Invalid > 0)
                {
                    durations.Add(new HistogramPoint(series, snapshot, _processStart));
                }

                continue;
            }

            HistogramSnapshot delta = series.Duration.CollectDelta();
            ulong start = _lastExport;
            if (_pending.TryGetValue(series, out (HistogramSnapshot Snapshot, ulong Start) unsent))
            {
                delta = unsent.Snapshot.Merge(delta);
                start = unsent.Start;
            }

            if (delta.Count > 0 || delta.Invalid > 0 || _pending.ContainsKey(series))
            {
                durations.Add(new HistogramPoint(series, delta, start));
            }
        }

        long overflow = _store.OverflowRecords;
        bool isDelta = _options.Temporality == OtlpTemporality.Delta;
        return new OtlpBatch(now, _processStart, _options.Temporality, durations, [.. _store.ActiveRequests()], _store.Rates.Read(), _store.SeriesCount,
            isDelta ? overflow - _overflowSent : overflow, isDelta ? _lastExport : _processStart);
    }

    private async Task<bool> SendAsync(byte[] body, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(_options.ExportTimeout);
        TimeSpan backoff = _options.RetryInitialBackoff;
        for (int attempt = 1; ; attempt++)
        {
            TimeSpan? wait;
            string problem;
            try
            {
                using HttpRequestMessage request = Request(body);
                using HttpResponseMessage response = await _client.SendAsync(request, deadline.Token).ConfigureAwait(false);
                if (response.IsSuccessStatusCode)
                {
                    Succeeded();
                    return true;
                }

                problem = $"the collector answered {(int)response.StatusCode} {response.ReasonPhrase}";
                if (response.StatusCode is not (HttpStatusCode.TooManyRequests or HttpStatusCode.BadGateway or HttpStatusCode.ServiceUnavailable or HttpStatusCode.GatewayTimeout))
                {
                    Failed(problem + " (not retryable)", null);
                    return false;
                }

                wait = RetryAfter(response.Headers.RetryAfter);
            }
            catch (HttpRequestException ex)
            {
                problem = "the collector is unreachable: " + ex.Message;
                wait = null;
            }
            catch (OperationCanceledException) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
            {
                Failed($"no answer within the export timeout of {_options.ExportTimeout.TotalSeconds:0.#} s", null);
                return false;
            }

            TimeSpan delay = wait ?? Jitter(backoff);
            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, TimeSpan.FromSeconds(30).Ticks));
            LogRetry(_logger, problem, attempt, delay.TotalSeconds);
            try
            {
                await Task.Delay(delay, _time, deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                Failed(problem + $"; gave up after {attempt} attempts within the export timeout", null);
                return false;
            }
        }
    }

    private HttpRequestMessage Request(byte[] body)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, _options.Endpoint);
        foreach ((string name, string value) in _options.Headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        byte[] payload = body;
        if (_options.Gzip)
        {
            using var compressed = new MemoryStream();
            using (var gzip = new GZipStream(compressed, CompressionLevel.Fastest, leaveOpen: true))
            {
                gzip.Write(body);
            }

            payload = compressed.ToArray();
        }

        request.Content = new ByteArrayContent(payload);
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/x-protobuf");
        if (_options.Gzip)
        {
            request.Content.Headers.ContentEncoding.Add("gzip");
        }

        return request;
    }

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
            LogRecovered(_logger, _consecutiveFailures, _options.Endpoint!);
            _consecutiveFailures = 0;
        }
    }

    /// <summary>The first failure of a run is a warning; repeats are debug until an export succeeds again.</summary>
    private void Failed(string problem, Exception? exception)
    {
        if (_consecutiveFailures++ == 0)
        {
            LogFailure(_logger, _options.Endpoint!, problem, exception);
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

    [LoggerMessage(Level = LogLevel.Information, Message = "PerCpu OTLP export recovered after {Failures} failed exports to {Endpoint}")]
    private static partial void LogRecovered(ILogger logger, int failures, Uri endpoint);
}
