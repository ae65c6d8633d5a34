namespace PerCpu.Families;

/// <summary>
/// A list that only grows, written under its owner's lock and read without one: a reader sees every item added before
/// it started reading (and perhaps some added meanwhile), in the order added, and allocates nothing. The series of a
/// capped table or family are kept in one, so a scrape walks them in place instead of copying them.
/// </summary>
internal sealed class AppendOnlyList<T>
{
    private T[] _items = new T[8];
    private int _count;

    /// <summary>The items published so far.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>The items published so far, in the order added (the array behind them is never written again below this length).</summary>
    public ReadOnlySpan<T> Items
    {
        get
        {
            int count = Volatile.Read(ref _count); // before the array: an item is in the array before the count says so
            T[] items = Volatile.Read(ref _items);
            return items.AsSpan(0, Math.Min(count, items.Length));
        }
    }

    /// <summary>Adds an item; the caller holds the owner's lock (one writer at a time).</summary>
    public void Add(T item)
    {
        T[] items = _items;
        int count = _count;
        if (count == items.Length)
        {
            var grown = new T[items.Length * 2];
            Array.Copy(items, grown, count);
            items = grown;
        }

        items[count] = item;
        Volatile.Write(ref _items, items);
        Volatile.Write(ref _count, count + 1);
    }
}
