using System.Buffers;
using System.Runtime.CompilerServices;

namespace PerCpu.Families;

/// <summary>
/// Finds the series of a tag set (a Meter API measurement's tags) without allocating: an open-addressing table read
/// lock-free, written under a lock. A series is its tag set as exposed: keys compared ordinally, values by their
/// rendering (<see cref="TagValues"/>), so tags in any order, and a status code given as <see cref="int"/> or as
/// <see cref="string"/>, find the same series; a key given twice in one measurement takes its last value, as
/// OpenTelemetry does. Capped: beyond <c>max</c> series every new tag set gets the overflow series, found without a lock.
/// </summary>
/// <remarks>
/// <para><b>Lookup</b>: a call site that passes the same tag objects again (literal keys and values, the usual case) finds
/// its series through the entry its CPU slot found last, by reference comparisons alone. Otherwise the tag set is
/// hashed (every character of every key and value, seeded per process, order-independent), the chain probed, and each
/// candidate compared tag by tag.</para>
/// <para><b>Reads while writers run</b>: <see cref="All"/> walks every series created before it was called; a
/// series created meanwhile may or may not be in it. Series are never removed.</para>
/// </remarks>
/// <param name="max">The most series; past it, new tag sets share the overflow series.</param>
/// <param name="create">Makes a series (the overflow one too).</param>
/// <param name="maxValueLength">The longest value exposed; longer ones are cut.</param>
/// <param name="onCut">Called once per series whose value was cut.</param>
/// <param name="onCreated">Called with each new series' labels.</param>
/// <param name="budget">A cap shared with other tables (the HTTP series cap), asked before each new series (not the
/// overflow one) is created; once it is spent, new tag sets get the overflow series without a lock.</param>
internal sealed class TagSeriesTable<TSeries>(int max, Func<TSeries> create, int maxValueLength = TagValues.DefaultMaxLength, Action? onCut = null, Action<MetricLabels>? onCreated = null, ISeriesBudget? budget = null)
    where TSeries : class
{
    /// <summary>Recent entries per CPU slot (two 64-byte lines): the last one found, then 15 chosen by the tag objects' addresses.</summary>
    private const int RecentWays = 16;

    private readonly Lock _lock = new();
    private readonly AppendOnlyList<Entry> _ordered = new();
    private Entry?[] _entries = new Entry?[16];

    // Per CPU slot, the entries found recently by reference comparison alone, in RecentWays places chosen by the
    // addresses of the tag objects (a call site that passes the same key and value objects, literals or strings from a
    // table, lands on the same place; an object moved by the GC only lands elsewhere once, a miss, never a wrong hit,
    // since a hit compares the references themselves). Written by the CPU that owns the slot, when a lookup by content
    // found an entry whose stored objects are the very ones given.
    private readonly Entry?[] _recent = new Entry?[ProcessorId.SlotCount * RecentWays];
    private TSeries? _noTags;
    private TSeries? _overflow;
    private int _count;

    /// <summary>The series created, the overflow series left out.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>Whether <paramref name="series"/> is the overflow series.</summary>
    public bool IsOverflow(TSeries series) => ReferenceEquals(series, Volatile.Read(ref _overflow));

    /// <summary>The series of <paramref name="tags"/>, created if needed (or the overflow series past the cap).</summary>
    /// <exception cref="Exception">A tag value's <see cref="object.ToString"/> threw; nothing was created.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TSeries Find(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (tags.IsEmpty)
        {
            return _noTags ?? AddNoTags();
        }

        int slot = ProcessorId.GetCurrentSlot() * RecentWays;
        if ((uint)slot < (uint)_recent.Length && _recent[slot] is { } last && SameObjects(last, tags))
        {
            return last.Series; // the usual case: the call site that wrote last on this CPU, again
        }

        return FindElsewhere(tags, slot);
    }

    /// <summary>Not the slot's last entry: the way's two places, then the table by content.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)] // keeps Find's inlined body (the common hit) small
    private TSeries FindElsewhere(ReadOnlySpan<KeyValuePair<string, object?>> tags, int slot)
    {
        int recent = slot + Way(tags);
        if ((uint)recent < (uint)_recent.Length)
        {
            // Two places for each way, so 16 recent tag sets rarely push each other out.
            int other = recent == slot + RecentWays - 1 ? slot + 1 : recent + 1;
            Entry? hit = _recent[recent] is { } near && SameObjects(near, tags) ? near
                : _recent[other] is { } next && SameObjects(next, tags) ? next
                : null;
            if (hit is not null)
            {
                _recent[slot] = hit; // the slot's last entry again, so a call site that stops rotating takes the short path
                return hit.Series;
            }
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

            if (e.Hash == hash && Matches(e, tags))
            {
                if ((uint)recent < (uint)_recent.Length && SameObjects(e, tags))
                {
                    // The next call with these objects is found by references alone: in the slot's last place, and
                    // in its way's first place if free, else its second, else over the first.
                    int other = recent == slot + RecentWays - 1 ? slot + 1 : recent + 1;
                    _recent[_recent[recent] is null || _recent[other] is not null ? recent : other] = e;
                    _recent[slot] = e;
                }

                return e.Series;
            }
        }

        return Miss(hash, tags);
    }

    /// <summary>
    /// The series in creation order, then the overflow series if any, walked in place: no lock, nothing allocated, so
    /// a scrape costs no memory per series. Every series created before the walk started is in it.
    /// </summary>
    public Walk All() => new(this);

    /// <summary>The <paramref name="index"/>-th series created (the overflow series left out), or null past the last.</summary>
    public (MetricLabels Labels, TSeries Series)? At(int index)
    {
        ReadOnlySpan<Entry> entries = _ordered.Items;
        return (uint)index < (uint)entries.Length ? (entries[index].Labels, entries[index].Series) : null;
    }

    /// <summary>See <see cref="All"/>.</summary>
    public readonly ref struct Walk(TagSeriesTable<TSeries> table)
    {
        public Enumerator GetEnumerator() => new(table._ordered.Items, Volatile.Read(ref table._overflow));
    }

    /// <summary>The walk's position.</summary>
    public ref struct Enumerator(ReadOnlySpan<Entry> entries, TSeries? overflow)
    {
        private readonly ReadOnlySpan<Entry> _entries = entries;
        private int _index = -1;

        public readonly (MetricLabels Labels, TSeries Series) Current =>
            _index < _entries.Length ? (_entries[_index].Labels, _entries[_index].Series) : (MetricLabels.Overflow, overflow!);

        public bool MoveNext() => ++_index < _entries.Length || (_index == _entries.Length && overflow is not null);
    }

    /// <summary>The longest distance of an entry from its home slot (diagnostics, tests): how far a lookup probes at worst.</summary>
    internal int LongestChain()
    {
        lock (_lock)
        {
            Entry?[] entries = _entries;
            int mask = entries.Length - 1, longest = 0;
            for (int i = 0; i < entries.Length; i++)
            {
                if (entries[i] is { } e)
                {
                    longest = Math.Max(longest, ((i - e.Hash) & mask) + 1);
                }
            }

            return longest;
        }
    }

    /// <summary>Which of a slot's recent places the tag objects' addresses choose (a hint only: hits compare references).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Way(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        ulong h = (ulong)tags.Length;
        foreach (KeyValuePair<string, object?> tag in tags)
        {
            h += (ulong)Address(tag.Value) ^ ((ulong)Address(tag.Key) >> 3); // independent per tag: no multiply chain
        }

        return 1 + (int)((h * 0x9E3779B97F4A7C15u) >> 60) % (RecentWays - 1); // place 0 is the slot's last entry
    }

    /// <summary>An object's address as a number, for hashing only; never turned back into a reference.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static nint Address(object? o) => Unsafe.As<object?, nint>(ref o);

    /// <summary>The same key and value objects in the same order: certainly the same tag set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool SameObjects(Entry stored, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        string[] keys = stored.Keys;
        object?[] raw = stored.Raw;
        if (keys.Length != tags.Length || raw.Length != tags.Length)
        {
            return false;
        }

        for (int i = 0; i < tags.Length; i++)
        {
            if (!ReferenceEquals(keys[i], tags[i].Key) || !ReferenceEquals(raw[i], tags[i].Value))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Whether <paramref name="tags"/> is the stored tag set: each stored key exactly once, each value rendering alike.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Matches(Entry stored, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        string[] keys = stored.Keys;
        if (keys.Length != tags.Length || tags.Length > 64)
        {
            return keys.Length == tags.Length && MatchesLarge(stored, tags);
        }

        ulong seen = 0;
        for (int i = 0; i < tags.Length; i++)
        {
            string key = tags[i].Key ?? "";
            int j = ReferenceEquals(keys[i], key) || string.Equals(keys[i], key, StringComparison.Ordinal) ? i : Array.IndexOf(keys, key);
            if (j < 0 || (seen & (1UL << j)) != 0)
            {
                return false; // a key the series lacks, or one given twice (then it is not this series' tag set as given)
            }

            seen |= 1UL << j;
            if (!TagValues.RendersAs(stored.Rendered[j], stored.Raw[j], tags[i].Value, maxValueLength))
            {
                return false;
            }
        }

        return true;
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // more than 64 tags: no bit set to spot a repeated key
    private bool MatchesLarge(Entry stored, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (HasDuplicateKeys(tags))
        {
            return false;
        }

        foreach (KeyValuePair<string, object?> tag in tags)
        {
            int j = Array.IndexOf(stored.Keys, tag.Key ?? "");
            if (j < 0 || !TagValues.RendersAs(stored.Rendered[j], stored.Raw[j], tag.Value, maxValueLength))
            {
                return false;
            }
        }

        return true;
    }

    private static bool HasDuplicateKeys(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        for (int i = 1; i < tags.Length; i++)
        {
            string key = tags[i].Key ?? "";
            for (int j = 0; j < i; j++)
            {
                if (string.Equals(tags[j].Key ?? "", key, StringComparison.Ordinal))
                {
                    return true;
                }
            }
        }

        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Hash(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        ulong sum = 0; // order-independent: a sum of per-tag hashes
        foreach (KeyValuePair<string, object?> tag in tags)
        {
            sum += TagValues.TagHash(tag.Key, tag.Value, maxValueLength);
        }

        return TagValues.Finish(sum);
    }

    /// <summary>No series matched: a key given twice, a new tag set, or one past the cap.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)] // the rare path, kept out of Find's inlined body
    private TSeries Miss(int hash, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (HasDuplicateKeys(tags))
        {
            return FindLastWins(tags);
        }

        if ((Volatile.Read(ref _count) >= max || budget?.SeriesCapReached == true) && Volatile.Read(ref _overflow) is { } overflow)
        {
            return overflow;
        }

        return Add(hash, tags);
    }

    /// <summary>A key given more than once: its last value counts (OpenTelemetry's rule), at the key's first position.</summary>
    private TSeries FindLastWins(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        KeyValuePair<string, object?>[] rented = ArrayPool<KeyValuePair<string, object?>>.Shared.Rent(tags.Length);
        try
        {
            int n = 0;
            foreach (KeyValuePair<string, object?> tag in tags)
            {
                string key = tag.Key ?? "";
                int at = 0;
                while (at < n && !string.Equals(rented[at].Key, key, StringComparison.Ordinal))
                {
                    at++;
                }

                rented[at] = new KeyValuePair<string, object?>(key, tag.Value);
                n = Math.Max(n, at + 1);
            }

            return Find(rented.AsSpan(0, n));
        }
        finally
        {
            ArrayPool<KeyValuePair<string, object?>>.Shared.Return(rented, clearArray: true);
        }
    }

    private TSeries AddNoTags()
    {
        lock (_lock)
        {
            if (_noTags is null)
            {
                TSeries series = create();
                _ordered.Add(new Entry(0, [], [], [], MetricLabels.Empty, series));
                Volatile.Write(ref _count, _ordered.Count);
                _noTags = series;
            }

            return _noTags;
        }
    }

    private TSeries Add(int hash, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        // Rendered before anything changes: a value whose ToString() throws leaves the table as it was.
        string[] keys = new string[tags.Length];
        object?[] raw = new object?[tags.Length];
        string[] rendered = new string[tags.Length];
        for (int i = 0; i < tags.Length; i++)
        {
            keys[i] = tags[i].Key ?? "";
            raw[i] = tags[i].Value;
            string full = TagValues.Render(tags[i].Value);
            rendered[i] = full.Length <= maxValueLength ? full : TagValues.Render(full, maxValueLength);
            if (full.Length > maxValueLength)
            {
                onCut?.Invoke(); // counted once per series, when it is created
            }
        }

        lock (_lock)
        {
            Entry?[] entries = _entries;
            int mask = entries.Length - 1;
            int i = hash & mask;
            for (; entries[i] is { } e; i = (i + 1) & mask)
            {
                if (e.Hash == hash && Matches(e, tags))
                {
                    return e.Series;
                }
            }

            if (_ordered.Count >= max || (budget is not null && !budget.TryReserveSeries()))
            {
                if (_overflow is null)
                {
                    Volatile.Write(ref _overflow, create());
                }

                return _overflow!;
            }

            var entry = new Entry(hash, keys, raw, rendered, Labels(keys, raw, rendered), create());
            _ordered.Add(entry);
            if ((_ordered.Count + 1) * 2 > entries.Length)
            {
                var grown = new Entry?[entries.Length * 2];
                foreach (Entry old in _ordered.Items)
                {
                    if (old.Keys.Length == 0)
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

            Volatile.Write(ref _count, _ordered.Count);
            onCreated?.Invoke(entry.Labels);
            return entry.Series;
        }
    }

    /// <summary>The exposition labels: keys sorted (ordinal), values as rendered; typed values kept for OTLP.</summary>
    private static MetricLabels Labels(string[] keys, object?[] raw, string[] rendered)
    {
        int[] order = [.. Enumerable.Range(0, keys.Length).OrderBy(i => keys[i], StringComparer.Ordinal)];
        return new MetricLabels(
            [.. order.Select(i => keys[i])],
            [.. order.Select(i => rendered[i])],
            [.. order.Select(i => raw[i] is bool or int or long or short or byte or double or float ? raw[i]! : rendered[i])]);
    }

    /// <summary>A series and its tag set as stored.</summary>
    internal sealed class Entry(int hash, string[] keys, object?[] raw, string[] rendered, MetricLabels labels, TSeries series)
    {
        public readonly int Hash = hash;
        public readonly string[] Keys = keys;
        public readonly object?[] Raw = raw;
        public readonly string[] Rendered = rendered;
        public readonly MetricLabels Labels = labels;
        public readonly TSeries Series = series;
    }
}

/// <summary>A series cap shared by several tables.</summary>
internal interface ISeriesBudget
{
    /// <summary>Whether no series is left (a hint read without a lock).</summary>
    bool SeriesCapReached { get; }

    /// <summary>Takes one series from the budget; false when none is left.</summary>
    bool TryReserveSeries();
}
