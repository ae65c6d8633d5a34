using System.Runtime.CompilerServices;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// Endpoint object → its handles, by reference, in an open-addressing array that readers probe without locks or
/// interface calls (a <c>ConcurrentDictionary</c> with a reference comparer cost an interface dispatch per request).
/// Grows by copy under a lock; bounded by <see cref="MaxEntries"/>.
/// </summary>
internal sealed class EndpointTable
{
    public const int MaxEntries = 8192;

    private readonly Lock _lock = new();
    private Entry[] _entries = new Entry[64];
    private int _count;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public EndpointMetrics? Find(object endpoint)
    {
        Entry[] entries = Volatile.Read(ref _entries);
        int mask = entries.Length - 1;
        for (int i = RuntimeHelpers.GetHashCode(endpoint) & mask, probes = 0; probes <= mask; i = (i + 1) & mask, probes++)
        {
            Entry? e = Volatile.Read(ref entries[i]);
            if (e is null)
            {
                return null;
            }

            if (ReferenceEquals(e.Key, endpoint))
            {
                return e.Value;
            }
        }

        return null;
    }

    public void Add(object endpoint, EndpointMetrics metrics)
    {
        lock (_lock)
        {
            if (_count >= MaxEntries || Find(endpoint) is not null)
            {
                return;
            }

            Entry[] entries = _entries;
            if ((_count + 1) * 2 > entries.Length)
            {
                var grown = new Entry[entries.Length * 2];
                foreach (Entry? e in entries)
                {
                    if (e is not null)
                    {
                        Insert(grown, e);
                    }
                }

                entries = grown;
            }

            Insert(entries, new Entry(endpoint, metrics));
            _count++;
            Volatile.Write(ref _entries, entries);
        }
    }

    private static void Insert(Entry[] entries, Entry entry)
    {
        int mask = entries.Length - 1;
        int i = RuntimeHelpers.GetHashCode(entry.Key) & mask;
        while (entries[i] is not null)
        {
            i = (i + 1) & mask;
        }

        Volatile.Write(ref entries[i], entry);
    }

    private sealed record Entry(object Key, EndpointMetrics Value);
}
