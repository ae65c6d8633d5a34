using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Http.Features;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// Custom request tags (<see cref="IHttpMetricsTagsFeature.Tags"/>, the documented ASP.NET Core way to enrich
/// <c>http.server.request.duration</c>) as labels of PerCpu's series. Tags under a key PerCpu sets itself
/// (<c>error.type</c>, which ASP.NET Core's exception handler adds there, <c>http.route</c>, ...) are left to PerCpu's own
/// value. Only requests that add tags come here.
/// </summary>
internal static class CustomTags
{
    /// <summary>The keys of PerCpu's own labels on the request metric.</summary>
    private static readonly string[] s_ownKeys =
    [
        "error.type", "http.route", "http.request.method", "http.response.status_code", "network.protocol.version",
        "url.scheme", "aspnetcore.request.is_unhandled", "otel.metric.overflow",
    ];

    [ThreadStatic]
    private static KeyValuePair<string, object?>[]? t_buffer;

    /// <summary>The series of <paramref name="series"/>'s labels plus <paramref name="tags"/> (itself if every tag is one of PerCpu's keys).</summary>
    public static RequestSeries SeriesFor(RequestSeries series, ICollection<KeyValuePair<string, object?>> tags, HttpMetricsStore store)
    {
        ReadOnlySpan<KeyValuePair<string, object?>> given = tags is List<KeyValuePair<string, object?>> list ? CollectionsMarshal.AsSpan(list) : Copy(tags);
        int own = 0;
        foreach (KeyValuePair<string, object?> tag in given)
        {
            if (IsOwn(tag.Key))
            {
                own++;
            }
        }

        if (own == given.Length)
        {
            return series; // e.g. only the exception handler's error.type, which PerCpu sets itself
        }

        if (own > 0)
        {
            given = WithoutOwn(given, given.Length - own);
        }

        return series.WithTags(given, store);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsOwn(string? key)
    {
        foreach (string k in s_ownKeys)
        {
            if (ReferenceEquals(k, key) || string.Equals(k, key, StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }

    private static KeyValuePair<string, object?>[] Buffer(int length)
    {
        KeyValuePair<string, object?>[]? buffer = t_buffer;
        if (buffer is null || buffer.Length < length)
        {
            t_buffer = buffer = new KeyValuePair<string, object?>[Math.Max(8, length)];
        }

        return buffer;
    }

    private static ReadOnlySpan<KeyValuePair<string, object?>> Copy(ICollection<KeyValuePair<string, object?>> tags)
    {
        KeyValuePair<string, object?>[] buffer = Buffer(tags.Count);
        tags.CopyTo(buffer, 0);
        return buffer.AsSpan(0, tags.Count);
    }

    private static ReadOnlySpan<KeyValuePair<string, object?>> WithoutOwn(ReadOnlySpan<KeyValuePair<string, object?>> given, int kept)
    {
        // The given span may be this very buffer (Copy): compact it in place, in order.
        KeyValuePair<string, object?>[] buffer = Buffer(given.Length);
        int n = 0;
        for (int i = 0; i < given.Length; i++)
        {
            KeyValuePair<string, object?> tag = given[i];
            if (!IsOwn(tag.Key))
            {
                buffer[n++] = tag;
            }
        }

        return buffer.AsSpan(0, kept);
    }
}

/// <summary>
/// The <see cref="IHttpMetricsTagsFeature"/> PerCpu sets on a request when ASP.NET Core's hosting layer has not (it does
/// only while its own meter has a listener). Lent from a small per-thread pool and cleared when taken back, as the
/// hosting layer reuses its own per connection.
/// </summary>
internal sealed class RequestTagsFeature : IHttpMetricsTagsFeature
{
    private const int PoolSize = 8;

    [ThreadStatic]
    private static RequestTagsFeature?[]? t_pool;

    [ThreadStatic]
    private static int t_count;

    private readonly ICollection<KeyValuePair<string, object?>> _tags;
    private readonly List<KeyValuePair<string, object?>>? _list;
    private bool _metricsDisabled;

    private RequestTagsFeature(bool discard)
    {
        _list = discard ? null : [];
        _tags = _list ?? (ICollection<KeyValuePair<string, object?>>)NoTags.Instance;
    }

    /// <summary>
    /// The one shared instance set on requests to excluded endpoints: it marks them for a re-execution of the same
    /// request, and drops whatever is given to it (nothing of such a request is recorded).
    /// </summary>
    public static RequestTagsFeature Excluded { get; } = new(discard: true);

    public ICollection<KeyValuePair<string, object?>> Tags => _tags;

    public bool MetricsDisabled
    {
        get => _metricsDisabled;
        set
        {
            if (_list is not null)
            {
                _metricsDisabled = value;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RequestTagsFeature Rent()
    {
        RequestTagsFeature?[]? pool = t_pool;
        int n = t_count;
        if (pool is not null && n > 0)
        {
            t_count = --n;
            RequestTagsFeature f = pool[n]!;
            pool[n] = null;
            return f;
        }

        return new RequestTagsFeature(discard: false);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Return(RequestTagsFeature feature)
    {
        if (feature._list!.Count != 0)
        {
            feature._list.Clear();
        }

        feature._metricsDisabled = false;
        RequestTagsFeature?[] pool = t_pool ??= new RequestTagsFeature?[PoolSize];
        int n = t_count;
        if (n < PoolSize)
        {
            pool[n] = feature;
            t_count = n + 1;
        }
    }
}

/// <summary>A collection that stays empty whatever is added to it (<see cref="RequestTagsFeature.Excluded"/>'s tags).</summary>
internal sealed class NoTags : ICollection<KeyValuePair<string, object?>>
{
    public static readonly NoTags Instance = new();

    public int Count => 0;

    public bool IsReadOnly => false;

    public void Add(KeyValuePair<string, object?> item)
    {
    }

    public void Clear()
    {
    }

    public bool Contains(KeyValuePair<string, object?> item) => false;

    public void CopyTo(KeyValuePair<string, object?>[] array, int arrayIndex)
    {
    }

    public bool Remove(KeyValuePair<string, object?> item) => false;

    public IEnumerator<KeyValuePair<string, object?>> GetEnumerator() => Enumerable.Empty<KeyValuePair<string, object?>>().GetEnumerator();

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}
