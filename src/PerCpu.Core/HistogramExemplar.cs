using System.Diagnostics;
using System.Runtime.InteropServices;

namespace PerCpu;

/// <summary>
/// A recorded value that links a histogram bucket to the trace that produced it: the value, when it was recorded, and
/// the W3C trace and span ids of the sampled <see cref="Activity"/> it was recorded under (an OpenMetrics / OTLP exemplar).
/// </summary>
/// <remarks>
/// A <see cref="PerCpuHistogram"/> keeps, per CPU, the latest exemplar of each classic bucket (each of
/// <see cref="HistogramLayout.ExplicitBoundaries"/> and <c>+Inf</c>); a read returns, per bucket, the latest over all CPUs.
/// An exemplar is never torn: its value, timestamp and ids always come from one record.
/// </remarks>
public readonly struct HistogramExemplar : IEquatable<HistogramExemplar>
{
    private readonly ulong _trace0;
    private readonly ulong _trace1;
    private readonly ulong _span;

    internal HistogramExemplar(int bucketIndex, double value, long timestampUnixNanoseconds, ulong trace0, ulong trace1, ulong span)
    {
        BucketIndex = bucketIndex;
        Value = value;
        TimestampUnixNanoseconds = timestampUnixNanoseconds;
        _trace0 = trace0;
        _trace1 = trace1;
        _span = span;
    }

    /// <summary>Whether this holds an exemplar (the default value does not).</summary>
    public bool HasValue => TimestampUnixNanoseconds != 0;

    /// <summary>The classic bucket: an index into <see cref="HistogramLayout.ExplicitBoundaries"/>, or its length for <c>+Inf</c>.</summary>
    public int BucketIndex { get; }

    /// <summary>The recorded value (seconds for durations).</summary>
    public double Value { get; }

    /// <summary>When it was recorded, in nanoseconds since the Unix epoch (UTC wall clock).</summary>
    public long TimestampUnixNanoseconds { get; }

    /// <summary>When it was recorded.</summary>
    public DateTimeOffset Timestamp => DateTimeOffset.UnixEpoch.AddTicks(TimestampUnixNanoseconds / 100);

    /// <summary>The trace id (allocates its hex string; writers use <see cref="CopyTraceId"/>).</summary>
    public ActivityTraceId TraceId
    {
        get
        {
            Span<byte> bytes = stackalloc byte[16];
            CopyTraceId(bytes);
            return ActivityTraceId.CreateFromBytes(bytes);
        }
    }

    /// <summary>The span id (allocates its hex string; writers use <see cref="CopySpanId"/>).</summary>
    public ActivitySpanId SpanId
    {
        get
        {
            Span<byte> bytes = stackalloc byte[8];
            CopySpanId(bytes);
            return ActivitySpanId.CreateFromBytes(bytes);
        }
    }

    /// <summary>Writes the 16 bytes of the trace id, in W3C order.</summary>
    /// <param name="destination">At least 16 bytes.</param>
    public void CopyTraceId(Span<byte> destination)
    {
        MemoryMarshal.Write(destination, in _trace0);
        MemoryMarshal.Write(destination[8..], in _trace1);
    }

    /// <summary>Writes the 8 bytes of the span id, in W3C order.</summary>
    /// <param name="destination">At least 8 bytes.</param>
    public void CopySpanId(Span<byte> destination) => MemoryMarshal.Write(destination, in _span);

    /// <inheritdoc/>
    public bool Equals(HistogramExemplar other) =>
        BucketIndex == other.BucketIndex && Value.Equals(other.Value) && TimestampUnixNanoseconds == other.TimestampUnixNanoseconds &&
        _trace0 == other._trace0 && _trace1 == other._trace1 && _span == other._span;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is HistogramExemplar other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(BucketIndex, Value, TimestampUnixNanoseconds, _trace0, _trace1, _span);

    /// <inheritdoc/>
    public override string ToString() => HasValue ? $"{Value} at {Timestamp:O} trace {TraceId} span {SpanId} (bucket {BucketIndex})" : "(none)";

    /// <summary>Equal exemplars.</summary>
    public static bool operator ==(HistogramExemplar left, HistogramExemplar right) => left.Equals(right);

    /// <summary>Different exemplars.</summary>
    public static bool operator !=(HistogramExemplar left, HistogramExemplar right) => !left.Equals(right);
}
