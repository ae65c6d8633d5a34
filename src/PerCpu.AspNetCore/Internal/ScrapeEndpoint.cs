using System.Buffers;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// The scrape endpoint's handler. Scrapes that arrive while a rendering of the same format is in progress share it
/// instead of starting their own, so a burst of N scrapes costs about one rendering and one copy of the output, not N.
/// The output is UTF-8 in pooled 64 KB chunks (never on the large-object heap), returned to the pool when the last
/// scrape that shares it has written it; each response is written with Kestrel's back-pressure, so a slow scraper holds
/// no more than its connection's output buffer beyond the shared copy.
/// </summary>
internal sealed class ScrapeEndpoint(HttpMetricsStore store, PerCpu.Families.MetricRegistry registry)
{
    private const int ChunkSize = 64 * 1024;

    private readonly Lock _lock = new();
    private readonly Rendering?[] _inFlight = new Rendering?[2];
    private long _renderings;

    /// <summary>Renderings made so far (scrapes that shared one are not counted twice).</summary>
    public long Renderings => Volatile.Read(ref _renderings);

    public async Task HandleAsync(HttpContext context)
    {
        ActiveRequestMark.Release(context, store);
        bool openMetrics = Exposition.WantsOpenMetrics(context.Request.Headers.Accept.ToString());
        context.Response.ContentType = openMetrics ? Exposition.OpenMetricsContentType : Exposition.TextContentType;
        context.Response.Headers.CacheControl = "no-store";
        if (HttpMethods.IsHead(context.Request.Method))
        {
            return; // probes: the headers of a scrape, without rendering one
        }

        Rendering rendering = Join(openMetrics);
        try
        {
            Chunk[] chunks = await rendering.Output.ConfigureAwait(false);
            context.Response.ContentLength = chunks.Sum(c => (long)c.Length);
            foreach (Chunk chunk in chunks)
            {
                await context.Response.Body.WriteAsync(chunk.Bytes.AsMemory(0, chunk.Length), context.RequestAborted).ConfigureAwait(false);
            }
        }
        finally
        {
            rendering.Release();
        }
    }

    /// <summary>The rendering in progress for this format, or a new one; the caller holds a reference until it releases it.</summary>
    private Rendering Join(bool openMetrics)
    {
        lock (_lock)
        {
            int format = openMetrics ? 1 : 0;
            if (_inFlight[format] is { } current && current.TryAcquire())
            {
                return current;
            }

            Interlocked.Increment(ref _renderings);
            var rendering = new Rendering();
            rendering.Output = Task.Run(() =>
            {
                try
                {
                    return Encode(Exposition.Write(store, registry, openMetrics));
                }
                finally
                {
                    lock (_lock)
                    {
                        if (_inFlight[format] == rendering)
                        {
                            _inFlight[format] = null; // later scrapes render afresh
                        }
                    }
                }
            });
            _inFlight[format] = rendering;
            return rendering;
        }
    }

    private static Chunk[] Encode(StringBuilder text)
    {
        var chunks = new List<Chunk>();
        Encoder encoder = Encoding.UTF8.GetEncoder();
        byte[] current = ArrayPool<byte>.Shared.Rent(ChunkSize);
        int used = 0;
        foreach (ReadOnlyMemory<char> part in text.GetChunks())
        {
            ReadOnlySpan<char> chars = part.Span;
            while (!chars.IsEmpty)
            {
                if (current.Length - used < 16)
                {
                    chunks.Add(new Chunk(current, used));
                    current = ArrayPool<byte>.Shared.Rent(ChunkSize);
                    used = 0;
                }

                encoder.Convert(chars, current.AsSpan(used), flush: false, out int charsUsed, out int bytesUsed, out _);
                chars = chars[charsUsed..];
                used += bytesUsed;
            }
        }

        chunks.Add(new Chunk(current, used));
        return [.. chunks];
    }

    private readonly record struct Chunk(byte[] Bytes, int Length);

    /// <summary>One rendering and the scrapes sharing it; its chunks go back to the pool when the last one releases it.</summary>
    private sealed class Rendering
    {
        private int _references = 1;

        public Task<Chunk[]> Output { get; set; } = null!;

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
            if (Interlocked.Decrement(ref _references) == 0 && Output.IsCompletedSuccessfully)
            {
                foreach (Chunk chunk in Output.Result)
                {
                    ArrayPool<byte>.Shared.Return(chunk.Bytes);
                }
            }
        }
    }
}
