using System.IO.Compression;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// The scrape endpoint's handler. Scrapes that arrive while a rendering of the same format is in progress, or within
/// <see cref="ShareWindowMilliseconds"/> of one that completed and is still being sent (and, while readers hold
/// <see cref="MaxRenderingsHeld"/> renderings, whatever its age), share it instead of starting their own, so a burst of N scrapes costs about one rendering and one copy of the output, not N. The output is UTF-8
/// in pooled 64 KB chunks (never on the large-object heap), returned to the pool when the last scrape that shares it has
/// written it; each response is written with Kestrel's back-pressure. Memory is bounded whatever the readers do: at most
/// <see cref="PerCpuMetricsOptions.MaxConcurrentScrapes"/> are answered at once (one more gets 503 and
/// <c>Retry-After</c> at once), and a reader that has not taken its response within
/// <see cref="PerCpuMetricsOptions.ScrapeTimeout"/> is cut off.
/// </summary>
internal sealed class ScrapeEndpoint(HttpMetricsStore store, PerCpu.Families.MetricRegistry registry, ILoggerFactory loggers)
{
    private readonly ILogger _log = loggers.CreateLogger("PerCpu.AspNetCore");
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte> _reportedConflicts = new(StringComparer.Ordinal);

    /// <summary>Metadata that marks PerCpu's own scrape endpoint.</summary>
    public static readonly object Marker = new PerCpuScrapeEndpointMetadata();

    /// <summary>How long a completed rendering that is still being sent is given to new scrapes of its format.</summary>
    internal const long ShareWindowMilliseconds = 1000;

    /// <summary>Renderings held by readers beyond which new scrapes share the newest instead of making another.</summary>
    internal const int MaxRenderingsHeld = 4;

    private readonly Lock _lock = new();
    private readonly Rendering?[] _inFlight = new Rendering?[3];
    private readonly Rendering?[] _latest = new Rendering?[3];
    private long _renderings;
    private int _scrapes;
    private int _alive;

    /// <summary>Scrapes being answered now.</summary>
    public int InFlight => Volatile.Read(ref _scrapes);

    /// <summary>Renderings made so far (scrapes that shared one are not counted twice).</summary>
    public long Renderings => Volatile.Read(ref _renderings);

    public async Task HandleAsync(HttpContext context)
    {
        ActiveRequestMark.Release(context, store);
        ScrapeFormat format = Exposition.Negotiate(context.Request.Headers.Accept.ToString());
        context.Response.ContentType = format switch
        {
            ScrapeFormat.Protobuf => PrometheusProtobufWriter.ContentType,
            ScrapeFormat.OpenMetrics => Exposition.OpenMetricsContentType,
            _ => Exposition.TextContentType,
        };
        context.Response.Headers.CacheControl = "no-store";

        bool gzip = AcceptsGzip(context.Request.Headers.AcceptEncoding.ToString());
        context.Response.Headers.Vary = "Accept-Encoding";
        if (gzip)
        {
            context.Response.Headers.ContentEncoding = "gzip";
        }

        if (HttpMethods.IsHead(context.Request.Method))
        {
            return; // probes: the headers of a scrape, without rendering one
        }

        PerCpuMetricsOptions options = store.Options;
        if (Interlocked.Increment(ref _scrapes) > options.MaxConcurrentScrapes)
        {
            Interlocked.Decrement(ref _scrapes);
            store.CountScrapeRefused();
            context.Response.Headers.ContentEncoding = default;
            context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            context.Response.Headers.RetryAfter = "1";
            return;
        }

        // The deadline aborts the connection: every pending write fails at once, gzip's final block included.
        using var deadline = new CancellationTokenSource(options.ScrapeTimeout);
        using CancellationTokenRegistration cut = deadline.Token.Register(static state =>
        {
            var (c, s) = ((HttpContext, HttpMetricsStore))state!;
            if (!c.RequestAborted.IsCancellationRequested)
            {
                s.CountScrapeCut();
                c.Abort();
            }
        }, (context, store));
        Rendering rendering = Join(format);
        try
        {
            await SendAsync(context, rendering, gzip).ConfigureAwait(false);
        }
        catch (Exception ex) when (deadline.IsCancellationRequested && ex is OperationCanceledException or IOException)
        {
            // The reader did not take its bytes in time and was cut off: it pins neither the rendering nor a connection.
        }
        finally
        {
            rendering.Release();
            Interlocked.Decrement(ref _scrapes);
        }
    }

    private static async Task SendAsync(HttpContext context, Rendering rendering, bool gzip)
    {
        CancellationToken aborted = context.RequestAborted;
        Chunk[] chunks = await rendering.Output.WaitAsync(aborted).ConfigureAwait(false);
        if (gzip)
        {
            // Compressed per response as it streams out (Prometheus asks for gzip): the shared rendering stays plain.
            var compressor = new GZipStream(context.Response.Body, CompressionLevel.Fastest, leaveOpen: true);
            await using (compressor.ConfigureAwait(false))
            {
                foreach (Chunk chunk in chunks)
                {
                    await compressor.WriteAsync(chunk.Bytes.AsMemory(0, chunk.Length), aborted).ConfigureAwait(false);
                }
            }

            return;
        }

        context.Response.ContentLength = chunks.Sum(c => (long)c.Length);
        foreach (Chunk chunk in chunks)
        {
            await context.Response.Body.WriteAsync(chunk.Bytes.AsMemory(0, chunk.Length), aborted).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Whether an Accept-Encoding header allows gzip: its own entry's q-value if it has one, else that of <c>*</c>, above
    /// 0 (RFC 9110, 12.5.3: an explicit coding outranks the wildcard, and q=0 means "not acceptable").
    /// </summary>
    internal static bool AcceptsGzip(string? acceptEncoding)
    {
        if (string.IsNullOrEmpty(acceptEncoding) || acceptEncoding.Length > 1024)
        {
            return false;
        }

        double? gzip = null, any = null;
        foreach (string part in acceptEncoding.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            string[] fields = part.Split(';', StringSplitOptions.TrimEntries);
            bool isGzip = fields[0].Equals("gzip", StringComparison.OrdinalIgnoreCase);
            if (!isGzip && fields[0] != "*")
            {
                continue;
            }

            double q = 1;
            foreach (string f in fields.Skip(1))
            {
                if (f.StartsWith("q=", StringComparison.OrdinalIgnoreCase)
                    && !double.TryParse(f.AsSpan(2), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out q))
                {
                    q = 0;
                }
            }

            if (isGzip)
            {
                gzip ??= q;
            }
            else
            {
                any ??= q;
            }
        }

        return (gzip ?? any ?? 0) > 0;
    }

    /// <summary>The rendering in progress for this format, or a new one; the caller holds a reference until it releases it.</summary>
    private Rendering Join(ScrapeFormat format)
    {
        lock (_lock)
        {
            if (_inFlight[(int)format] is { } current && current.TryAcquire())
            {
                return current;
            }

            if (_latest[(int)format] is { } recent
                && (Environment.TickCount64 - recent.CompletedAt <= ShareWindowMilliseconds || Volatile.Read(ref _alive) >= MaxRenderingsHeld)
                && recent.TryAcquire())
            {
                // Completed a moment ago and still being sent to someone: the same bytes, no new copy. Or slow readers
                // already hold MaxRenderingsHeld renderings: the newest is given out again, however old, so readers can
                // pin at most that many copies (each is cut at ScrapeTimeout).
                return recent;
            }

            Interlocked.Increment(ref _renderings);
            Interlocked.Increment(ref _alive);
            var rendering = new Rendering(() => Interlocked.Decrement(ref _alive));
            rendering.Output = Task.Run(() =>
            {
                try
                {
                    var output = new ChunkWriter();
                    ReportConflicts(Exposition.Write(output, store, registry, format));
                    return Array.ConvertAll(output.Complete(), c => new Chunk(c.Bytes, c.Length));
                }
                finally
                {
                    lock (_lock)
                    {
                        rendering.CompletedAt = Environment.TickCount64;
                        if (_inFlight[(int)format] == rendering)
                        {
                            _inFlight[(int)format] = null; // later scrapes share it for a moment, then render afresh
                            _latest[(int)format] = rendering;
                        }
                    }
                }
            });
            _inFlight[(int)format] = rendering;
            return rendering;
        }
    }

    /// <summary>Logs each family left out of a scrape for a name conflict, once per family (they are counted per scrape).</summary>
    private void ReportConflicts(IReadOnlyList<PerCpu.Families.MetricDescriptor> leftOut)
    {
        foreach (PerCpu.Families.MetricDescriptor family in leftOut)
        {
            if (_reportedConflicts.TryAdd(family.ToString(), 0))
            {
                s_nameConflict(_log, family.ToString(), PerCpu.Formats.PrometheusNaming.For(family).TextFamilyName, null);
            }
        }
    }

    private static readonly Action<ILogger, string, string, Exception?> s_nameConflict = LoggerMessage.Define<string, string>(
        LogLevel.Warning,
        new EventId(11, "MetricNameConflict"),
        "{Family} is left out of the scrape: another family already takes the Prometheus name '{Name}' (or one of its sample names). Rename one of them; each scrape counts it in percpu_metric_name_conflicts_total.");

    /// <summary>Logs a warning for each other endpoint whose route is the scrape endpoint's.</summary>
    public static void WarnAboutOtherEndpointsAt(string pattern, IEnumerable<EndpointDataSource> sources, IServiceProvider services)
    {
        try
        {
            string ours = pattern.Trim('/');
            var others = sources.SelectMany(s => s.Endpoints).OfType<RouteEndpoint>()
                .Where(e => e.Metadata.GetMetadata<PerCpuScrapeEndpointMetadata>() is null
                    && string.Equals(e.RoutePattern.RawText?.Trim('/'), ours, StringComparison.OrdinalIgnoreCase))
                .ToList();
            if (others.Count == 0)
            {
                return;
            }

            ILogger logger = services.GetRequiredService<ILoggerFactory>().CreateLogger("PerCpu.AspNetCore");
            foreach (RouteEndpoint other in others)
            {
                LogPathShared(logger, pattern, other.DisplayName ?? other.RoutePattern.RawText ?? pattern);
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or NotSupportedException)
        {
            // An endpoint source that cannot be enumerated at this point: nothing to warn about.
        }
    }

    // LoggerMessage.Define rather than the source generator: the generator writes every [LoggerMessage] class of the
    // assembly into one file in the order the compiler sees the files, which differs between checkouts, and the
    // packed assembly must be byte-identical wherever it is built (eng/package-check.sh).
    private static readonly Action<ILogger, string, string, Exception?> s_pathShared = LoggerMessage.Define<string, string>(
        LogLevel.Warning,
        new EventId(10, "ScrapePathShared"),
        "Another endpoint ('{Other}') is mapped at '{Pattern}', where PerCpu's scrape endpoint is: a scraper reaches only one of them. Map one at another path, e.g. app.MapPerCpuMetrics(\"/metrics\") and app.MapPrometheusScrapingEndpoint(\"/metrics/otel\").");

    private static void LogPathShared(ILogger logger, string pattern, string other) => s_pathShared(logger, other, pattern, null);

    private sealed class PerCpuScrapeEndpointMetadata;

    private readonly record struct Chunk(byte[] Bytes, int Length);

    /// <summary>One rendering and the scrapes sharing it; its chunks go back to the pool when the last one releases it.</summary>
    private sealed class Rendering(Action released)
    {
        private int _references = 1;

        public Task<Chunk[]> Output { get; set; } = null!;

        /// <summary>When the rendering completed (<see cref="Environment.TickCount64"/>), under the endpoint's lock.</summary>
        public long CompletedAt { get; set; } = long.MaxValue;

        public bool TryAcquire()
        {
            int seen = Volatile.Read(ref _references);
            while (seen > 0)
            {
                int previous = Interlocked.CompareExchange(ref _references, seen + 1, seen);
                if (previous == seen)
                {
                    return true;
                }

                seen = previous;
            }

            return false;
        }

        public void Release()
        {
            if (Interlocked.Decrement(ref _references) != 0)
            {
                return;
            }

            released();
            if (Output.IsCompletedSuccessfully)
            {
                foreach (Chunk chunk in Output.Result)
                {
                    if (chunk.Bytes.Length == ChunkWriter.ChunkSize)
                    {
                        ChunkWriter.Pool.Return(chunk.Bytes);
                    }
                }
            }
        }
    }
}
