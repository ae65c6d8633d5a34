using System.Runtime.CompilerServices;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// Everything an endpoint's requests touch, resolved once per endpoint: whether it is excluded, its route label, its
/// per-route request counter (for rates), and its series keyed by a packed integer of label indexes.
/// </summary>
/// <remarks>
/// The series table is open addressing over an array that is replaced, never mutated in place, when it grows: readers
/// probe it without locks and see either the old or the new array, both complete. Insertion takes a lock; it happens
/// once per label combination, and never once the global series cap is reached (then the overflow series is returned
/// without locking or growing anything).
/// </remarks>
internal sealed class EndpointMetrics(string? route, bool excluded, HttpMetricsStore store, bool unhandled = false)
{
    private readonly Lock _insertLock = new();
    private RequestSeries?[] _table = new RequestSeries?[8];
    private int _count;

    /// <summary>The <c>http.route</c> value; null: none (a request that matched nothing, a route-less endpoint).</summary>
    public string? Route { get; } = route;

    public bool Excluded { get; } = excluded;

    /// <summary>Requests that reached the end of the pipeline unhandled (<c>aspnetcore.request.is_unhandled</c>).</summary>
    public bool Unhandled { get; } = unhandled;

    /// <summary>Requests completed on this route (rates are computed from it at scrape time).</summary>
    public PerCpuCounter Requests { get; } = new();

    public static int Pack(int method, int status, int scheme, int protocol, int error) =>
        1 + (method | (status << 4) | (scheme << 13) | (protocol << 14) | (error << 17));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public RequestSeries GetSeries(int key)
    {
        RequestSeries?[] table = Volatile.Read(ref _table);
        int mask = table.Length - 1;
        for (int i = (int)(((uint)key * 2654435769u) >> 8) & mask, probes = 0; probes <= mask; i = (i + 1) & mask, probes++)
        {
            RequestSeries? s = Volatile.Read(ref table[i]);
            if (s is null)
            {
                break;
            }

            if (s.Key == key)
            {
                return s;
            }
        }

        return AddSeries(key);
    }

    /// <summary>Every series of this endpoint, each followed by its series with custom request tags.</summary>
    public IEnumerable<RequestSeries> Series()
    {
        foreach (RequestSeries? s in Volatile.Read(ref _table))
        {
            if (s is null)
            {
                continue;
            }

            yield return s;
            foreach (RequestSeries tagged in s.TaggedSeries())
            {
                yield return tagged;
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // once per label combination
    private RequestSeries AddSeries(int key)
    {
        if (store.SeriesCapReached)
        {
            return store.OverflowSeries; // no lock, no growth: a flood of new combinations costs nothing
        }

        lock (_insertLock)
        {
            RequestSeries?[] table = _table;
            foreach (RequestSeries? existing in table)
            {
                if (existing?.Key == key)
                {
                    return existing;
                }
            }

            if (!store.TryReserveSeries())
            {
                return store.OverflowSeries;
            }

            int k = key - 1;
            int errorIndex = k >> 17;
            int status = (k >> 4) & 0x1FF;
            var series = new RequestSeries(key, Route, k & 0xF, status, (k >> 13) & 1, (k >> 14) & 0x7, store.ErrorTypeName(errorIndex, status), isOverflow: false, store.Layout, Unhandled);
            if ((_count + 1) * 2 > table.Length)
            {
                var grown = new RequestSeries?[table.Length * 2];
                foreach (RequestSeries? s in table)
                {
                    if (s is not null)
                    {
                        Insert(grown, s);
                    }
                }

                table = grown;
            }

            Insert(table, series);
            _count++;
            Volatile.Write(ref _table, table);
            return series;
        }
    }

    private static void Insert(RequestSeries?[] table, RequestSeries series)
    {
        int mask = table.Length - 1;
        int i = (int)(((uint)series.Key * 2654435769u) >> 8) & mask;
        while (table[i] is not null)
        {
            i = (i + 1) & mask;
        }

        Volatile.Write(ref table[i], series);
    }
}
