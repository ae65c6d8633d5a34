using System.Globalization;
using System.Runtime.CompilerServices;

namespace PerCpu.Families;

/// <summary>
/// Finds the series of a tag set (a Meter API measurement's tags) without allocating: an open-addressing table read
/// lock-free, written under a lock; tags in any order find the same series. Capped: beyond <c>max</c> series every new
/// tag set gets the overflow series.
/// </summary>
internal sealed class TagSeriesTable<TSeries>(int max, Func<TSeries> create)
    where TSeries : class
{
    private readonly Lock _lock = new();
    private readonly List<Entry> _ordered = [];
    private Entry?[] _entries = new Entry?[16];

    // The entry each CPU slot found last, one per 64-byte line (8 references apart): a call site that passes the same tag
    // objects again (literal keys and values, the usual case) finds its series by six reference comparisons, without
    // hashing. Written only by the CPU that owns the line, and only when its last entry changes.
    private readonly Entry?[] _recent = new Entry?[ProcessorId.SlotCount * RecentStride];
    private const int RecentStride = 8;
    private TSeries? _noTags;
    private TSeries? _overflow;
    private long _overflowMeasurements;

    /// <summary>Measurements recorded in the overflow series.</summary>
    public long OverflowMeasurements => Volatile.Read(ref _overflowMeasurements);

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _ordered.Count;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TSeries Find(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (tags.IsEmpty)
        {
            return _noTags ?? AddNoTags();
        }

        int recent = ProcessorId.GetCurrentSlot() * RecentStride;
        if ((uint)recent < (uint)_recent.Length && _recent[recent] is { } last && SameObjects(last.Tags, tags))
        {
            return last.Series;
        }

        int hash = Hash(tags);
        Entry?[] entries = Volatile.Read(ref _entries);
        int mask = entries.Length - 1;
        for (int i = hash & mask; ; i = (i + 1) & mask)
        {
            Entry? e = Volatile.Read(ref entries[i]);
            if (e is null)
            {
                break;
            }

            if (e.Hash == hash && Matches(e.Tags, tags))
            {
                if ((uint)recent < (uint)_recent.Length)
                {
                    _recent[recent] = e;
                }

                return e.Series;
            }
        }

        return Add(hash, tags);
    }

    /// <summary>The same key and value objects in the same order: certainly the same tag set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool SameObjects(KeyValuePair<string, object?>[] stored, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (stored.Length != tags.Length)
        {
            return false;
        }

        for (int i = 0; i < tags.Length; i++)
        {
            if (!ReferenceEquals(stored[i].Key, tags[i].Key) || !ReferenceEquals(stored[i].Value, tags[i].Value))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The series in creation order, then the overflow series if any.</summary>
    public (MetricLabels Labels, TSeries Series)[] Snapshot()
    {
        lock (_lock)
        {
            var result = new List<(MetricLabels, TSeries)>(_ordered.Count + 1);
            foreach (Entry e in _ordered)
            {
                result.Add((e.Labels, e.Series));
            }

            if (_overflow is not null)
            {
                result.Add((MetricLabels.Overflow, _overflow));
            }

            return [.. result];
        }
    }

    private TSeries AddNoTags()
    {
        lock (_lock)
        {
            if (_noTags is null)
            {
                TSeries series = create();
                _ordered.Add(new Entry(0, [], MetricLabels.Empty, series));
                _noTags = series;
            }

            return _noTags;
        }
    }

    private TSeries Add(int hash, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        lock (_lock)
        {
            Entry?[] entries = _entries;
            int mask = entries.Length - 1;
            int i = hash & mask;
            for (; entries[i] is { } e; i = (i + 1) & mask)
            {
                if (e.Hash == hash && Matches(e.Tags, tags))
                {
                    return e.Series;
                }
            }

            if (_ordered.Count >= max)
            {
                Interlocked.Increment(ref _overflowMeasurements);
                return _overflow ??= create();
            }

            KeyValuePair<string, object?>[] copy = tags.ToArray();
            var entry = new Entry(hash, copy, Labels(copy), create());
            _ordered.Add(entry);
            if ((_ordered.Count + 1) * 2 > entries.Length)
            {
                var grown = new Entry?[entries.Length * 2];
                foreach (Entry old in _ordered)
                {
                    if (old.Tags.Length == 0)
                    {
                        continue;
                    }

                    int j = old.Hash & (grown.Length - 1);
                    while (grown[j] is not null)
                    {
                        j = (j + 1) & (grown.Length - 1);
                    }

                    grown[j] = old;
                }

                Volatile.Write(ref _entries, grown);
            }
            else
            {
                Volatile.Write(ref entries[i], entry);
            }

            return entry.Series;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Hash(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        // Order-independent: a sum of per-tag hashes, then mixed.
        uint sum = 0;
        foreach (KeyValuePair<string, object?> tag in tags)
        {
            uint h = StringHash(tag.Key) * 0x9E3779B1u;
            h ^= ValueHash(tag.Value);
            sum += h * 0x85EBCA77u;
        }

        sum ^= sum >> 15;
        sum *= 0x2C1B3C6Du;
        sum ^= sum >> 13;
        return (int)sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint ValueHash(object? value) => value switch
    {
        null => 0,
        string s => StringHash(s),
        _ => (uint)value.GetHashCode(),
    };

    /// <summary>
    /// A constant-time hash of a string: its length and four sampled characters. Equal strings hash equally, which is
    /// all correctness needs (lookups compare the strings); strings that differ only elsewhere share a probe chain, at
    /// worst as long as the series cap. Hashing every character (Marvin) cost more than the rest of a measurement.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint StringHash(string? s)
    {
        if (s is null)
        {
            return 0;
        }

        int n = s.Length;
        if (n == 0)
        {
            return 1;
        }

        uint h = ((uint)n * 0x01000193u) ^ s[0];
        h = (h * 0x01000193u) ^ s[n - 1];
        h = (h * 0x01000193u) ^ s[n >> 1];
        h = (h * 0x01000193u) ^ s[(n * 3) >> 2];
        return h * 0x01000193u;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Matches(KeyValuePair<string, object?>[] stored, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (stored.Length != tags.Length)
        {
            return false;
        }

        bool inOrder = true;
        for (int i = 0; i < tags.Length; i++)
        {
            if (!string.Equals(stored[i].Key, tags[i].Key, StringComparison.Ordinal) || !ValueEquals(stored[i].Value, tags[i].Value))
            {
                inOrder = false;
                break;
            }
        }

        return inOrder || MatchesAnyOrder(stored, tags);
    }

    private static bool MatchesAnyOrder(KeyValuePair<string, object?>[] stored, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        foreach (KeyValuePair<string, object?> tag in tags)
        {
            bool found = false;
            foreach (KeyValuePair<string, object?> s in stored)
            {
                if (string.Equals(s.Key, tag.Key, StringComparison.Ordinal))
                {
                    found = ValueEquals(s.Value, tag.Value);
                    break;
                }
            }

            if (!found)
            {
                return false;
            }
        }

        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool ValueEquals(object? a, object? b) =>
        ReferenceEquals(a, b) || (a is string sa ? b is string sb && string.Equals(sa, sb, StringComparison.Ordinal) : Equals(a, b));

    /// <summary>The exposition labels: keys sorted (ordinal), values as invariant strings.</summary>
    private static MetricLabels Labels(KeyValuePair<string, object?>[] tags)
    {
        KeyValuePair<string, object?>[] sorted = [.. tags.OrderBy(t => t.Key, StringComparer.Ordinal)];
        string[] values = [.. sorted.Select(t => t.Value switch
        {
            null => "",
            string s => s,
            bool b => b ? "true" : "false",
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            _ => t.Value.ToString() ?? "",
        })];
        object[] raw = [.. sorted.Select((t, i) => t.Value is bool or int or long or short or byte or double or float ? t.Value : values[i])];
        return new MetricLabels([.. sorted.Select(t => t.Key ?? "")], values, raw);
    }

    private sealed class Entry(int hash, KeyValuePair<string, object?>[] tags, MetricLabels labels, TSeries series)
    {
        public readonly int Hash = hash;
        public readonly KeyValuePair<string, object?>[] Tags = tags;
        public readonly MetricLabels Labels = labels;
        public readonly TSeries Series = series;
    }
}
