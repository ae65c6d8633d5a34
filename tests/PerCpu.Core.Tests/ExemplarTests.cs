using System.Buffers.Binary;
using System.Diagnostics;

namespace PerCpu.Tests;

[Trait(Traits.Category, Traits.Core)]
public sealed class ExemplarTests
{
    private static readonly HistogramLayout Layout = HistogramLayout.Default;

    [Fact]
    public void SampledContext_KeepsTheLatestPerBucket_UnsampledAndInvalidLeaveNone()
    {
        var h = new PerCpuHistogram();
        var spans = new ActivitySpanId[3];
        for (int i = 0; i < 3; i++)
        {
            spans[i] = ActivitySpanId.CreateRandom();
            h.Record(0.02, new ActivityContext(ActivityTraceId.CreateRandom(), spans[i], ActivityTraceFlags.Recorded));
        }

        h.Record(0.02, new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.None));
        h.Record(double.NaN, new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded));
        h.Record(-1, new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded));
        var trace = ActivityTraceId.CreateRandom();
        h.Record(100, new ActivityContext(trace, ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded)); // above every boundary: +Inf
        h.Record(0.005, (Activity?)null);

        var perBucket = new HistogramExemplar[Layout.ExplicitBoundaries.Count + 1];
        Assert.Equal(2, h.ReadExemplars(perBucket));
        int bucket = Layout.ExplicitBoundaries.ToList().IndexOf(0.025); // 0.02 lies in (0.01, 0.025]
        Assert.Equal(0.02, perBucket[bucket].Value);
        Assert.Equal(spans[2], perBucket[bucket].SpanId); // the latest of the three sampled records
        Assert.Equal(bucket, perBucket[bucket].BucketIndex);
        Assert.Equal(trace, perBucket[^1].TraceId);
        Assert.InRange(perBucket[^1].Timestamp, DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddSeconds(1));
        Assert.Equal([bucket, Layout.ExplicitBoundaries.Count], h.Snapshot().Exemplars.Select(e => e.BucketIndex));
        Assert.Equal(6, h.Snapshot().Count); // exemplars never change the counts
        Assert.Equal(2, h.Snapshot().Invalid);
    }

    [Fact]
    public void ValueOnABoundary_BelongsToThatBucket()
    {
        var h = new PerCpuHistogram();
        h.Record(0.1, new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded));
        HistogramExemplar e = Assert.Single(h.Snapshot().Exemplars);
        Assert.Equal(0.1, Layout.ExplicitBoundaries[e.BucketIndex]); // le="0.1" is inclusive
    }

    [Fact]
    public void RecordTicks_WithARecordedActivity_StoresItsIds()
    {
        var h = new PerCpuHistogram();
        using var activity = new Activity("test");
        activity.SetIdFormat(ActivityIdFormat.W3C);
        activity.ActivityTraceFlags = ActivityTraceFlags.Recorded;
        activity.Start();
        h.RecordTicks(Stopwatch.Frequency / 100, activity); // 10 ms
        activity.ActivityTraceFlags = ActivityTraceFlags.None;
        h.RecordTicks(Stopwatch.Frequency * 3, activity); // not sampled any more: no exemplar in the 5 s bucket
        HistogramExemplar e = Assert.Single(h.Snapshot().Exemplars);
        Assert.Equal(activity.TraceId, e.TraceId);
        Assert.Equal(activity.SpanId, e.SpanId);
        Assert.Equal(0.01, e.Value, 12);
    }

    [Fact]
    public void CollectDelta_CarriesOnlyExemplarsSinceThePreviousCollect()
    {
        var h = new PerCpuHistogram();
        h.Record(0.02, new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded));
        Assert.Single(h.CollectDelta().Exemplars);
        Assert.Empty(h.CollectDelta().Exemplars);
        Thread.Sleep(2); // the wall clock moves on
        h.Record(3, new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded));
        Assert.Equal(3, Assert.Single(h.CollectDelta().Exemplars).Value);
        Assert.Equal(2, h.Snapshot().Exemplars.Count); // the cumulative view keeps both buckets' latest
    }

    /// <summary>
    /// 16 writers (8x the cores here) store exemplars whose trace id encodes the value, into a few buckets, while the
    /// test thread reads and checks every exemplar it sees: an exemplar mixing two records (a torn read) would break the
    /// encoding. Writers keep going past their quota until the reader has checked enough exemplars (bounded in time),
    /// so reads really overlap writes even when the scheduler lets the writers finish first.
    /// </summary>
    [Fact]
    public void ConcurrentWritersAndReader_NeverSeeATornExemplar()
    {
        var h = new PerCpuHistogram();
        const int Writers = 16, PerWriter = 50_000, WantChecked = 2_000;
        double[] values = [0.003, 0.02, 0.07, 0.3, 4, 50];
        double[] boundaries = [.. Layout.ExplicitBoundaries];
        var perBucket = new HistogramExemplar[boundaries.Length + 1];
        long written = 0, checkedExemplars = 0;
        var limit = Stopwatch.StartNew();

        int reads = Stress.WritersWhileReading(Writers, w =>
        {
            Span<byte> trace = stackalloc byte[16];
            Span<byte> span = stackalloc byte[8];
            long mine = 0;
            for (int i = 0; i < PerWriter || (Volatile.Read(ref checkedExemplars) < WantChecked && limit.Elapsed < TimeSpan.FromSeconds(30)); i++)
            {
                double v = values[(i + w) % values.Length] * (1 + (w * 1e-6));
                BinaryPrimitives.WriteInt64BigEndian(trace, BitConverter.DoubleToInt64Bits(v));
                BinaryPrimitives.WriteInt64BigEndian(trace[8..], w + 1);
                BinaryPrimitives.WriteInt64BigEndian(span, w + 1);
                h.Record(v, new ActivityContext(ActivityTraceId.CreateFromBytes(trace), ActivitySpanId.CreateFromBytes(span), ActivityTraceFlags.Recorded));
                mine++;
            }

            Interlocked.Add(ref written, mine);
        }, () =>
        {
            Span<byte> id = stackalloc byte[16];
            Span<byte> span = stackalloc byte[8];
            h.ReadExemplars(perBucket);
            foreach (HistogramExemplar e in perBucket)
            {
                if (!e.HasValue)
                {
                    continue;
                }

                e.CopyTraceId(id);
                double encoded = BitConverter.Int64BitsToDouble(BinaryPrimitives.ReadInt64BigEndian(id));
                long writer = BinaryPrimitives.ReadInt64BigEndian(id[8..]);
                e.CopySpanId(span);
                Assert.Equal(encoded, e.Value);
                Assert.Equal(writer, BinaryPrimitives.ReadInt64BigEndian(span));
                int i = Array.BinarySearch(boundaries, e.Value);
                Assert.Equal(i >= 0 ? i : ~i, e.BucketIndex);
                Volatile.Write(ref checkedExemplars, checkedExemplars + 1);
            }
        });

        Assert.True(written >= (long)Writers * PerWriter);
        Assert.Equal(written, h.Snapshot().Count);
        Assert.Equal(values.Length, h.Snapshot().Exemplars.Count);
        Assert.True(checkedExemplars >= WantChecked, $"the reader checked {checkedExemplars} exemplars in {reads} reads while writers ran");
    }
}
