using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PerCpu.Internal;

namespace PerCpu;

/// <summary>
/// A histogram whose <see cref="Record(double)"/> touches only the current CPU's shard. On the rseq write path
/// (<see cref="ProcessorId.WritePath"/>): one restartable section for the bucket and one for the sum, no <c>lock</c>
/// prefix. Otherwise: one uncontended interlocked increment of one bucket and one uncontended compare-and-swap of the
/// shard's sum. Either way a compare-and-swap of min or max only when the value is a new extreme for that shard. Reads
/// merge the shards.
/// </summary>
/// <remarks>
/// <para><b>Shards</b>: one padded <c>long[]</c> per CPU slot, plus one shared by threads that cannot take an rseq section (see <see cref="HistogramLayout"/> for the cells and the exact
/// size: 2048 bytes at the defaults), allocated the first time a thread records from that slot. Layout of a shard: 128
/// bytes of padding, eleven scalar cells (sum, tick sum, min, max, delta min, delta max, tick-sum carry, invalid, zero,
/// underflow, overflow), the exponential buckets, one split cell per explicit boundary, 104 bytes of padding.</para>
/// <para><b>Tick sums never wrap</b>: <see cref="RecordTicks(long)"/> adds to a 64-bit tick cell, and each time a shard's cell
/// reaches 2^48 ticks, 2^48 moves to a carry cell; reads combine both exactly (128-bit). Between the two interlocked
/// operations of a carry (once per 2^48 ticks of summed duration per CPU) a concurrent read may see the sum 2^48 ticks
/// low; at quiescence it is exact. Without the carry, 10,000 requests held open for 11 days would wrap it.</para>
/// <para><b>Bad input</b> never throws and is never dropped: NaN, infinities and negative values increment
/// <see cref="HistogramSnapshot.Invalid"/>; zero (and negative zero) has its own bucket; positive values outside the
/// layout's range go to the underflow and overflow buckets, and still count in <see cref="HistogramSnapshot.Sum"/>,
/// <see cref="HistogramSnapshot.Min"/> and <see cref="HistogramSnapshot.Max"/>.</para>
/// <para><b>Snapshots taken while writers run</b> (<see cref="Snapshot"/>): each cell is read once, so every bucket count is
/// one that existed during the read, and <see cref="HistogramSnapshot.Count"/> is the sum of the buckets read, so count
/// and buckets always agree. The sum, min and max are read after the buckets and may include records whose bucket
/// increment the snapshot did not see (a record increments its bucket first). Successive snapshots never see a bucket
/// count decrease. At quiescence a snapshot is exact: the same counts, sum, min and max as one thread recording the same
/// values (the sum up to floating-point reassociation when values are not exactly representable partial sums).</para>
/// <para><b>Deltas</b> (<see cref="CollectDelta"/>): counts and sums are the difference from the previous collect's
/// cumulative read, so no record is ever lost or counted twice; min and max come from separate per-shard delta cells that
/// the collect resets with an atomic exchange (the cumulative min and max are never reset), so the delta's min/max cover the records since the previous collect (a record racing the collect may have its min/max
/// reported in one delta and its bucket in the next).</para>
/// <para><b>Exemplars</b> (the <see cref="Activity"/> and <see cref="ActivityContext"/> overloads): a record made under a
/// sampled activity also stores, in its CPU's exemplar cells (created with the first exemplar), the value, the wall-clock
/// time and the trace and span ids as the latest exemplar of its classic bucket: one uncontended compare-and-swap of a
/// sequence number, plain stores, no lock, nothing allocated. Two threads storing into the same bucket of the same CPU at
/// the same instant keep one of the two. A read (<see cref="ReadExemplars(Span{HistogramExemplar})"/>, <see cref="HistogramSnapshot.Exemplars"/>)
/// returns, per bucket, the latest whole exemplar over all CPUs, never a mix of two records.</para>
/// </remarks>
public sealed class PerCpuHistogram
{
    private readonly HistogramLayout _layout;
    private readonly HistogramLayout.ScaleTables _tables;
    private readonly long[]?[] _shards;
    private readonly int _shardLength;
    private readonly int _lowIndex;
    private readonly uint _bucketCount;
    private readonly ulong[] _splitMap;
    private readonly Lock _collectLock = new();
    private long[]? _lastCollected;
    private long _lastCollectedUnixNanoseconds;
    private long[]?[]? _exemplars; // per CPU slot, created with the first exemplar: most histograms never see one

    /// <summary>Creates a histogram with <see cref="HistogramLayout.Default"/> or the given layout.</summary>
    /// <param name="layout">The bucket layout; null for the default.</param>
    public PerCpuHistogram(HistogramLayout? layout = null)
    {
        _layout = layout ?? HistogramLayout.Default;
        _tables = _layout.Tables;
        _shards = new long[]?[ProcessorId.SlotCount + 1]; // plus the shared shard of threads without an rseq section
        _shardLength = ShardLayout.Length(_layout);
        _lowIndex = _layout.LowIndex;
        _bucketCount = (uint)_layout.BucketCount;
        _splitMap = _layout.SplitMap;
    }

    /// <summary>The bucket layout.</summary>
    public HistogramLayout Layout => _layout;

    /// <summary>How many CPU slots have a shard.</summary>
    public int ShardCount => _shards.Count(s => s is not null);

    /// <summary>Records <paramref name="value"/> (seconds for durations; any unit in general). Never throws.</summary>
    /// <param name="value">The value. NaN, infinities and negative values are counted as invalid.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Record(double value)
    {
        int cell = CellOf(value);
        if (RseqWrites.Enabled)
        {
            RecordRseq(cell, value);
            return;
        }

        long[] shard = CurrentShard();
        Interlocked.Increment(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(shard), cell));
        if (cell >= ShardLayout.Zero)
        {
            AddSumMinMax(shard, value);
        }
    }

    /// <summary>
    /// Records a <see cref="Stopwatch"/> interval in seconds. The sum is kept in integer ticks (one interlocked add, no
    /// floating-point accumulation), the bucket is that of <c>ticks / Stopwatch.Frequency</c> seconds.
    /// </summary>
    /// <param name="ticks">Elapsed <see cref="Stopwatch"/> ticks; a negative interval is counted as invalid.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void RecordTicks(long ticks)
    {
        double seconds = ticks * Ticks.SecondsPerTick;
        int cell = CellOf(seconds);
        if (RseqWrites.Enabled)
        {
            RecordTicksRseq(cell, ticks, seconds);
            return;
        }

        long[] shard = CurrentShard();
        ref long cells = ref MemoryMarshal.GetArrayDataReference(shard);
        Interlocked.Increment(ref Unsafe.Add(ref cells, cell));
        if (cell >= ShardLayout.Zero)
        {
            if (ticks < ShardLayout.TickCarry)
            {
                if (Interlocked.Add(ref Unsafe.Add(ref cells, ShardLayout.SumTicks), ticks) >= ShardLayout.TickCarry)
                {
                    CarryTicks(shard);
                }
            }
            else
            {
                AddLargeTicks(shard, ticks);
            }

            UpdateMinMax(shard, seconds);
        }
    }

    /// <summary>
    /// The rseq write path (<see cref="RseqWrites"/>): the bucket and the sum in two sections of one stub call, no lock
    /// prefix.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void RecordRseq(int cell, double value)
    {
        if (cell < ShardLayout.Zero)
        {
            int r = RseqWrites.Add(_shards, cell, 1); // invalid: counted, nothing else
            if (r < 0)
            {
                _ = AddSlow(cell, 1, r, out _);
            }

            return;
        }

        int slot = RseqWrites.AddThenDouble(_shards, cell, 1, ShardLayout.Sum, value);
        if ((uint)slot >= RseqStubs.SecondNotDone)
        {
            slot = RecordRseqSlow(cell, value, slot);
        }

        UpdateMinMax(_shards[slot]!, value); // min and max are compare-and-swap cells, never written by a section
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private int RecordRseqSlow(int cell, double value, int result)
    {
        int slot = result >= 0 ? result - RseqStubs.SecondNotDone : AddSlow(cell, 1, result, out _);
        AddDoubleSlow(value);
        return slot;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void RecordTicksRseq(int cell, long ticks, double seconds)
    {
        if (cell < ShardLayout.Zero || ticks >= ShardLayout.TickCarry)
        {
            RecordTicksRseqRare(cell, ticks, seconds);
            return;
        }

        int slot = RseqWrites.AddTwo(_shards, cell, 1, ShardLayout.SumTicks, ticks, out long now);
        if ((uint)slot >= RseqStubs.SecondNotDone)
        {
            slot = RecordTicksRseqSlow(cell, ticks, slot, out now);
        }

        if (now >= ShardLayout.TickCarry)
        {
            CarryTicksRseq(now);
        }

        UpdateMinMax(_shards[slot]!, seconds);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private int RecordTicksRseqSlow(int cell, long ticks, int result, out long now)
    {
        int slot = result >= 0 ? result - RseqStubs.SecondNotDone : AddSlow(cell, 1, result, out _);
        now = AddAnyRseq(ShardLayout.SumTicks, ticks);
        return slot;
    }

    /// <summary>An invalid interval (counted only) or one of 2^48 ticks or more (days: straight to the carry cell).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void RecordTicksRseqRare(int cell, long ticks, double seconds)
    {
        int slot = RseqWrites.Add(_shards, cell, 1);
        if (slot < 0)
        {
            slot = AddSlow(cell, 1, slot, out _);
        }

        if (cell >= ShardLayout.Zero)
        {
            AddLargeTicksRseq(ticks);
            UpdateMinMax(_shards[slot]!, seconds);
        }
    }

    /// <summary>
    /// An add the stub could not do: the slot has no shard yet (created, then the section runs again), or this thread
    /// cannot take a section (added with an interlocked operation to the shared shard, which no section writes).
    /// Returns the slot written and the cell's new value.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private int AddSlow(int cell, long value, int result, out long newValue)
    {
        newValue = 0;
        while (result < -1)
        {
            _ = CreateShard(RseqWrites.MissingSlot(result));
            result = RseqWrites.Add(_shards, cell, value, out newValue);
        }

        if (result >= 0)
        {
            return result;
        }

        int shared = _shards.Length - 1;
        long[] shard = _shards[shared] ?? CreateShard(shared);
        newValue = Interlocked.Add(ref shard[cell], value);
        return shared;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AddDoubleSlow(double value)
    {
        while (true)
        {
            int result = RseqWrites.AddDouble(_shards, ShardLayout.Sum, value);
            if (result >= 0)
            {
                return;
            }

            if (result == -1)
            {
                int shared = _shards.Length - 1;
                AddSumInterlocked(_shards[shared] ?? CreateShard(shared), value);
                return;
            }

            _ = CreateShard(RseqWrites.MissingSlot(result));
        }
    }

    /// <summary>Any add of the rseq path that is not the hot one (carries, huge intervals).</summary>
    private long AddAnyRseq(int cell, long value)
    {
        int result = RseqWrites.Add(_shards, cell, value, out long now);
        if (result < 0)
        {
            _ = AddSlow(cell, value, result, out now);
        }

        return now;
    }

    /// <summary>
    /// The rseq path's carry: whole units of 2^48 ticks leave the tick cell of the shard this thread writes now and go to
    /// that shard's carry cell (the shard may differ from the one that grew: totals are exact either way).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void CarryTicksRseq(long now)
    {
        long move = now & ~(ShardLayout.TickCarry - 1);
        _ = AddAnyRseq(ShardLayout.SumTicks, -move);
        _ = AddAnyRseq(ShardLayout.SumTicksCarry, move / ShardLayout.TickCarry);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AddLargeTicksRseq(long ticks)
    {
        _ = AddAnyRseq(ShardLayout.SumTicksCarry, ticks / ShardLayout.TickCarry);
        long now = AddAnyRseq(ShardLayout.SumTicks, ticks % ShardLayout.TickCarry);
        if (now >= ShardLayout.TickCarry)
        {
            CarryTicksRseq(now);
        }
    }

    /// <summary>Records the time since <paramref name="startTimestamp"/> (a <see cref="Stopwatch.GetTimestamp"/> value).</summary>
    /// <param name="startTimestamp">The start.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void RecordElapsed(long startTimestamp) => RecordTicks(Stopwatch.GetTimestamp() - startTimestamp);

    /// <summary>
    /// Records <paramref name="value"/> and, when <paramref name="exemplar"/> is a sampled (recorded) activity, keeps it as
    /// the latest exemplar of the value's classic bucket on this CPU. With no activity, or one not sampled, this costs one
    /// check more than <see cref="Record(double)"/>.
    /// </summary>
    /// <param name="value">The value.</param>
    /// <param name="exemplar">The current activity (usually <see cref="Activity.Current"/>), or null.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Record(double value, Activity? exemplar)
    {
        Record(value);
        if (exemplar is not null && exemplar.Recorded)
        {
            StoreExemplar(value, exemplar.TraceId, exemplar.SpanId);
        }
    }

    /// <summary>Records <paramref name="value"/> with an exemplar when <paramref name="exemplar"/> is sampled (its trace flags say recorded).</summary>
    /// <param name="value">The value.</param>
    /// <param name="exemplar">The trace context the value belongs to.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Record(double value, in ActivityContext exemplar)
    {
        Record(value);
        if ((exemplar.TraceFlags & ActivityTraceFlags.Recorded) != 0)
        {
            StoreExemplar(value, exemplar.TraceId, exemplar.SpanId);
        }
    }

    /// <summary>
    /// <see cref="RecordTicks(long)"/>, and when <paramref name="exemplar"/> is a sampled (recorded) activity, keeps it as the
    /// latest exemplar of the interval's classic bucket on this CPU. With no activity, or one not sampled, this costs one
    /// check more than <see cref="RecordTicks(long)"/>.
    /// </summary>
    /// <param name="ticks">Elapsed <see cref="Stopwatch"/> ticks.</param>
    /// <param name="exemplar">The current activity (usually <see cref="Activity.Current"/>), or null.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void RecordTicks(long ticks, Activity? exemplar)
    {
        RecordTicks(ticks);
        if (exemplar is not null && exemplar.Recorded)
        {
            StoreExemplar(ticks * Ticks.SecondsPerTick, exemplar.TraceId, exemplar.SpanId);
        }
    }

    /// <summary>
    /// The latest exemplar of each classic bucket over all CPUs (index = bucket: each of
    /// <see cref="HistogramLayout.ExplicitBoundaries"/>, then <c>+Inf</c>); buckets without one are left default. Allocates
    /// nothing. Each exemplar read is whole (never mixes two records); one stored while the read runs may be missed.
    /// </summary>
    /// <param name="perBucket">At least <c>ExplicitBoundaries.Count + 1</c> entries.</param>
    /// <returns>How many buckets have an exemplar.</returns>
    public int ReadExemplars(Span<HistogramExemplar> perBucket) => ReadExemplarsSince(perBucket, sinceUnixNanoseconds: 0);

    private int ReadExemplarsSince(Span<HistogramExemplar> perBucket, long sinceUnixNanoseconds)
    {
        int n = _layout.Boundaries.Length + 1;
        if (perBucket.Length < n)
        {
            throw new ArgumentException($"Needs room for {n} exemplars.", nameof(perBucket));
        }

        perBucket[..n].Clear();
        long[]?[]? all = Volatile.Read(ref _exemplars);
        if (all is null)
        {
            return 0;
        }

        int found = 0;
        foreach (long[]? cells in all)
        {
            if (cells is null)
            {
                continue;
            }

            for (int b = 0; b < n; b++)
            {
                if (TryReadExemplar(cells, b, out HistogramExemplar e) && e.TimestampUnixNanoseconds > sinceUnixNanoseconds &&
                    e.TimestampUnixNanoseconds > perBucket[b].TimestampUnixNanoseconds)
                {
                    found += perBucket[b].HasValue ? 0 : 1;
                    perBucket[b] = e;
                }
            }
        }

        return found;
    }

    private HistogramExemplar[] ExemplarList(long sinceUnixNanoseconds)
    {
        if (Volatile.Read(ref _exemplars) is null)
        {
            return [];
        }

        var perBucket = new HistogramExemplar[_layout.Boundaries.Length + 1];
        return ReadExemplarsSince(perBucket, sinceUnixNanoseconds) == 0 ? [] : [.. perBucket.Where(e => e.HasValue)];
    }

    // An exemplar's cells, one cache line: sequence (odd while written), value bits, Unix ns, trace id (2), span id.
    private const int ExemplarStride = 8;
    private const int ExemplarPadding = 16; // 128 bytes ahead of the first: no false sharing with the array's neighbour

    [MethodImpl(MethodImplOptions.NoInlining)] // sampled requests only
    private void StoreExemplar(double value, ActivityTraceId traceId, ActivitySpanId spanId)
    {
        if (!double.IsFinite(value) || !(value >= 0))
        {
            return; // an invalid value has no bucket, so no exemplar (it is counted in Invalid)
        }

        int slot = ProcessorId.GetCurrentSlot();
        long[]?[] all = Volatile.Read(ref _exemplars) ?? CreateExemplarSlots();
        long[] cells = Volatile.Read(ref all[slot]) ?? CreateExemplarCells(all, slot);
        int at = ExemplarPadding + (ClassicBucket(value) * ExemplarStride);
        ref long sequence = ref cells[at];
        long seen = Volatile.Read(ref sequence);
        if ((seen & 1) != 0 || Interlocked.CompareExchange(ref sequence, seen + 1, seen) != seen)
        {
            return; // another thread of this CPU slot is storing one into this bucket right now: it is just as recent
        }

        Span<byte> ids = stackalloc byte[24];
        traceId.CopyTo(ids[..16]); // exact lengths: CopyTo fills the whole destination
        spanId.CopyTo(ids[16..]);
        cells[at + 1] = BitConverter.DoubleToInt64Bits(value);
        cells[at + 2] = (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;
        cells[at + 3] = MemoryMarshal.Read<long>(ids);
        cells[at + 4] = MemoryMarshal.Read<long>(ids[8..]);
        cells[at + 5] = MemoryMarshal.Read<long>(ids[16..]);
        Volatile.Write(ref sequence, seen + 2); // release: the fields above are visible before the even sequence
    }

    private static bool TryReadExemplar(long[] cells, int bucket, out HistogramExemplar exemplar)
    {
        int at = ExemplarPadding + (bucket * ExemplarStride);
        for (int attempt = 0; attempt < 8; attempt++)
        {
            long before = Volatile.Read(ref cells[at]);
            if (before == 0)
            {
                break; // never written
            }

            if ((before & 1) == 0)
            {
                double value = BitConverter.Int64BitsToDouble(Volatile.Read(ref cells[at + 1]));
                long time = Volatile.Read(ref cells[at + 2]);
                long t0 = Volatile.Read(ref cells[at + 3]), t1 = Volatile.Read(ref cells[at + 4]), span = Volatile.Read(ref cells[at + 5]);
                if (Volatile.Read(ref cells[at]) == before)
                {
                    exemplar = new HistogramExemplar(bucket, value, time, (ulong)t0, (ulong)t1, (ulong)span);
                    return true;
                }
            }

            Thread.SpinWait(1 << attempt);
        }

        exemplar = default;
        return false;
    }

    /// <summary>The classic bucket of a valid value: the first explicit boundary at or above it, or <c>+Inf</c>.</summary>
    private int ClassicBucket(double value)
    {
        int i = Array.BinarySearch(_layout.Boundaries, value);
        return i >= 0 ? i : ~i;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private long[]?[] CreateExemplarSlots()
    {
        var fresh = new long[]?[_shards.Length];
        return Interlocked.CompareExchange(ref _exemplars, fresh, null) ?? fresh;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private long[] CreateExemplarCells(long[]?[] all, int slot)
    {
        long[] fresh = new long[(2 * ExemplarPadding) + ((_layout.Boundaries.Length + 1) * ExemplarStride)];
        return Interlocked.CompareExchange(ref all[slot], fresh, null) ?? fresh;
    }

    /// <summary>Merges the shards into a cumulative snapshot. See the type's remarks for reads during concurrent writes.</summary>
    public HistogramSnapshot Snapshot() =>
        HistogramSnapshot.FromCells(_layout, ReadCells(vectorized: true), ReadMinMax(reset: false), delta: false).WithExemplars(ExemplarList(0));

    /// <summary>The records since the previous call (or since creation), for delta temporality. Loses no concurrent record.</summary>
    public HistogramSnapshot CollectDelta()
    {
        lock (_collectLock)
        {
            long[] now = ReadCells(vectorized: true);
            (double min, double max) = ReadMinMax(reset: true);
            long[] delta = (long[])now.Clone();
            if (_lastCollected is not null)
            {
                for (int i = 0; i < delta.Length; i++)
                {
                    delta[i] -= _lastCollected[i];
                }

                // Sums are differences of cumulative sums: exact for ticks, floating-point for doubles.
                delta[ShardLayout.Sum] = BitConverter.DoubleToInt64Bits(BitConverter.Int64BitsToDouble(now[ShardLayout.Sum]) - BitConverter.Int64BitsToDouble(_lastCollected[ShardLayout.Sum]));
            }

            _lastCollected = now;
            // Exemplars recorded since the previous collect (by wall clock).
            long since = _lastCollectedUnixNanoseconds;
            _lastCollectedUnixNanoseconds = (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;
            return HistogramSnapshot.FromCells(_layout, delta, (min, max), delta: true).WithExemplars(ExemplarList(since));
        }
    }

    /// <summary>The merged cells; the scalar path is the oracle of the vectorized one.</summary>
    internal long[] ReadCells(bool vectorized)
    {
        long[] acc = new long[_shardLength];
        ReadCellsInto(acc, vectorized);
        return acc;
    }

    /// <summary>
    /// What a classic (Prometheus <c>le</c>, OTLP explicit-bucket) exposition needs, without allocating a snapshot: the
    /// exact cumulative count at or below each of <see cref="HistogramLayout.ExplicitBoundaries"/>, the count, the sum and
    /// the invalid count. Same concurrency guarantee as <see cref="Snapshot"/>: count and cumulative counts come from
    /// one read of each cell and always agree with each other.
    /// </summary>
    /// <param name="cumulativeCounts">Receives one count per explicit boundary.</param>
    /// <param name="sum">The sum of the valid values.</param>
    /// <param name="invalid">The invalid count.</param>
    /// <returns>The count of valid values (the <c>+Inf</c> bucket).</returns>
    public long ReadExplicitBuckets(Span<long> cumulativeCounts, out double sum, out long invalid)
    {
        if (cumulativeCounts.Length < _layout.Boundaries.Length)
        {
            throw new ArgumentException($"Needs room for {_layout.Boundaries.Length} counts.", nameof(cumulativeCounts));
        }

        long[] buffer = System.Buffers.ArrayPool<long>.Shared.Rent(_shardLength);
        try
        {
            Array.Clear(buffer, 0, _shardLength);
            ReadCellsInto(buffer, vectorized: true);
            sum = SumOf(buffer);
            invalid = buffer[ShardLayout.Invalid];
            return HistogramSnapshot.Cumulative(_layout, buffer.AsSpan(0, _shardLength), cumulativeCounts);
        }
        finally
        {
            System.Buffers.ArrayPool<long>.Shared.Return(buffer);
        }
    }

    private void ReadCellsInto(long[] acc, bool vectorized)
    {
        double sum = 0;
        foreach (long[]? shard in _shards)
        {
            if (shard is null)
            {
                continue;
            }

            // Buckets first, then sums: a record bumps its bucket before its sum.
            Span<long> counts = acc.AsSpan(ShardLayout.Invalid, _shardLength - ShardLayout.Invalid - ShardLayout.TailPadding);
            ReadOnlySpan<long> src = shard.AsSpan(ShardLayout.Invalid, counts.Length);
            if (vectorized)
            {
                ShardMath.AddInto(counts, src);
            }
            else
            {
                ShardMath.AddIntoScalar(counts, src);
            }

            sum += BitConverter.Int64BitsToDouble(Volatile.Read(ref shard[ShardLayout.Sum]));
            // The carry first: a carry moves ticks out of SumTicks before it adds them here, so this order can only
            // miss a carry in flight, never count it twice.
            acc[ShardLayout.SumTicksCarry] += Volatile.Read(ref shard[ShardLayout.SumTicksCarry]);
            acc[ShardLayout.SumTicks] += Volatile.Read(ref shard[ShardLayout.SumTicks]);
        }

        acc[ShardLayout.Sum] = BitConverter.DoubleToInt64Bits(sum);
    }

    private (double Min, double Max) ReadMinMax(bool reset)
    {
        double min = double.PositiveInfinity, max = double.NegativeInfinity;
        foreach (long[]? shard in _shards)
        {
            if (shard is null)
            {
                continue;
            }

            long minBits = reset ? Interlocked.Exchange(ref shard[ShardLayout.DeltaMin], s_positiveInfinityBits) : Volatile.Read(ref shard[ShardLayout.Min]);
            long maxBits = reset ? Interlocked.Exchange(ref shard[ShardLayout.DeltaMax], s_negativeInfinityBits) : Volatile.Read(ref shard[ShardLayout.Max]);
            min = Math.Min(min, BitConverter.Int64BitsToDouble(minBits));
            max = Math.Max(max, BitConverter.Int64BitsToDouble(maxBits));
        }

        return (min, max);
    }

    private static readonly long s_positiveInfinityBits = BitConverter.DoubleToInt64Bits(double.PositiveInfinity);
    private static readonly long s_negativeInfinityBits = BitConverter.DoubleToInt64Bits(double.NegativeInfinity);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long[] CurrentShard()
    {
        int slot = ProcessorId.GetCurrentSlot();
        Debug.Assert((uint)slot < (uint)_shards.Length, "slots are below SlotCount");
        return Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_shards), slot) ?? CreateShard(slot);
    }

    /// <summary>The cell a value is counted in.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int CellOf(double value)
    {
        ulong bits = (ulong)BitConverter.DoubleToInt64Bits(value);
        if (bits - 1 >= 0x7FEF_FFFF_FFFF_FFFF)
        {
            // Not a positive finite number: +0 (bits 0 wraps around), or negative, -0, NaN, +-infinity.
            return (bits << 1) == 0 ? ShardLayout.Zero : ShardLayout.Invalid;
        }

        uint rel = (uint)(_tables.Index(bits) - _lowIndex);
        if (rel >= _bucketCount)
        {
            return (int)rel < 0 ? ShardLayout.Underflow : ShardLayout.Overflow;
        }

        if ((Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_splitMap), (nint)(rel >> 6)) & (1UL << (int)rel)) != 0)
        {
            return SplitCell((int)rel, value);
        }

        return ShardLayout.Buckets + (int)rel;
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // only the few buckets that hold an explicit boundary
    private int SplitCell(int rel, double value)
    {
        double[] boundaries = _layout.Boundaries;
        int[] buckets = _layout.BoundaryBucket;
        int splits = ShardLayout.Splits(_layout);
        for (int b = 0; b < boundaries.Length; b++)
        {
            if (buckets[b] == rel && value <= boundaries[b])
            {
                return splits + b;
            }
        }

        return ShardLayout.Buckets + rel;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddSumMinMax(long[] shard, double value)
    {
        AddSumInterlocked(shard, value);
        UpdateMinMax(shard, value);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddSumInterlocked(long[] shard, double value)
    {
        ref long sum = ref shard[ShardLayout.Sum];
        long seen = Volatile.Read(ref sum);
        while (true)
        {
            long next = BitConverter.DoubleToInt64Bits(BitConverter.Int64BitsToDouble(seen) + value);
            long found = Interlocked.CompareExchange(ref sum, next, seen);
            if (found == seen)
            {
                break;
            }

            seen = found; // another thread on this CPU slot got in between: rare
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UpdateMinMax(long[] shard, double value)
    {
        // The delta cells are reset by collects, so they are always at least as tight as the cumulative ones: one
        // compare each on the common path.
        if (value < BitConverter.Int64BitsToDouble(Volatile.Read(ref shard[ShardLayout.DeltaMin])))
        {
            UpdateExtreme(ref shard[ShardLayout.DeltaMin], value, lower: true);
            UpdateExtreme(ref shard[ShardLayout.Min], value, lower: true);
        }

        if (value > BitConverter.Int64BitsToDouble(Volatile.Read(ref shard[ShardLayout.DeltaMax])))
        {
            UpdateExtreme(ref shard[ShardLayout.DeltaMax], value, lower: false);
            UpdateExtreme(ref shard[ShardLayout.Max], value, lower: false);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // a new extreme for this shard: rare after warm-up
    private static void UpdateExtreme(ref long cell, double value, bool lower)
    {
        long seen = Volatile.Read(ref cell);
        while (lower ? value < BitConverter.Int64BitsToDouble(seen) : value > BitConverter.Int64BitsToDouble(seen))
        {
            long found = Interlocked.CompareExchange(ref cell, BitConverter.DoubleToInt64Bits(value), seen);
            if (found == seen)
            {
                return;
            }

            seen = found;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // once per CPU slot per histogram
    private long[] CreateShard(int slot)
    {
        long[] fresh = new long[_shardLength];
        fresh[ShardLayout.Min] = fresh[ShardLayout.DeltaMin] = s_positiveInfinityBits;
        fresh[ShardLayout.Max] = fresh[ShardLayout.DeltaMax] = s_negativeInfinityBits;
        return Interlocked.CompareExchange(ref _shards[slot], fresh, null) ?? fresh;
    }

    /// <summary>The sum of merged cells: the double sum of Record plus the integer tick sum of RecordTicks, in seconds.</summary>
    internal static double SumOf(ReadOnlySpan<long> cells) =>
        BitConverter.Int64BitsToDouble(cells[ShardLayout.Sum]) + ((double)TickSum(cells) * Ticks.SecondsPerTick);

    /// <summary>The exact tick sum: the tick cells plus the carried units of 2^48.</summary>
    internal static Int128 TickSum(ReadOnlySpan<long> cells) =>
        (Int128)cells[ShardLayout.SumTicks] + ((Int128)cells[ShardLayout.SumTicksCarry] * ShardLayout.TickCarry);

    /// <summary>
    /// Moves the whole units of 2^48 ticks from the tick cell to the carry cell (rare: once per 2^48 ticks of summed
    /// duration per shard). Two writers may both move: the cell can then go below zero, but every tick taken from it is
    /// added to the carry, so the total stays exact.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void CarryTicks(long[] shard)
    {
        long move = Volatile.Read(ref shard[ShardLayout.SumTicks]) & ~(ShardLayout.TickCarry - 1);
        if (move > 0)
        {
            Interlocked.Add(ref shard[ShardLayout.SumTicks], -move);
            Interlocked.Add(ref shard[ShardLayout.SumTicksCarry], move / ShardLayout.TickCarry);
        }
    }

    /// <summary>A single interval of 2^48 ticks or more (days): its whole units go straight to the carry cell.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void AddLargeTicks(long[] shard, long ticks)
    {
        Interlocked.Add(ref shard[ShardLayout.SumTicksCarry], ticks / ShardLayout.TickCarry);
        if (Interlocked.Add(ref shard[ShardLayout.SumTicks], ticks % ShardLayout.TickCarry) >= ShardLayout.TickCarry)
        {
            CarryTicks(shard);
        }
    }

    private static class Ticks
    {
        public static readonly double SecondsPerTick = 1.0 / Stopwatch.Frequency;
    }
}
