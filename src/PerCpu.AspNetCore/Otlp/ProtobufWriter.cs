using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace PerCpu.AspNetCore.Otlp;

/// <summary>
/// A minimal protocol-buffers writer: varints, fixed64/double, strings, packed repeated fields and nested messages
/// (written into a child writer, then copied behind their length). Enough for OTLP; runs once per export interval.
/// </summary>
internal sealed class ProtobufWriter
{
    private readonly ArrayBufferWriter<byte> _buffer = new(256);

    public ReadOnlySpan<byte> WrittenSpan => _buffer.WrittenSpan;

    public void Varint(int field, ulong value)
    {
        Tag(field, 0);
        RawVarint(value);
    }

    public void SInt32(int field, int value) => Varint(field, (uint)((value << 1) ^ (value >> 31))); // zigzag

    public void Bool(int field, bool value) => Varint(field, value ? 1UL : 0UL);

    public void Fixed64(int field, ulong value)
    {
        Tag(field, 1);
        BinaryPrimitives.WriteUInt64LittleEndian(_buffer.GetSpan(8), value);
        _buffer.Advance(8);
    }

    public void Double(int field, double value) => Fixed64(field, BitConverter.DoubleToUInt64Bits(value));

    public void String(int field, string value)
    {
        Tag(field, 2);
        int length = Encoding.UTF8.GetByteCount(value);
        RawVarint((ulong)length);
        Encoding.UTF8.GetBytes(value, _buffer.GetSpan(length));
        _buffer.Advance(length);
    }

    public void Bytes(int field, ReadOnlySpan<byte> value)
    {
        Tag(field, 2);
        RawVarint((ulong)value.Length);
        value.CopyTo(_buffer.GetSpan(value.Length));
        _buffer.Advance(value.Length);
    }

    public void PackedFixed64(int field, ReadOnlySpan<long> values)
    {
        Tag(field, 2);
        RawVarint((ulong)values.Length * 8);
        foreach (long v in values)
        {
            BinaryPrimitives.WriteInt64LittleEndian(_buffer.GetSpan(8), v);
            _buffer.Advance(8);
        }
    }

    public void PackedDouble(int field, ReadOnlySpan<double> values)
    {
        Tag(field, 2);
        RawVarint((ulong)values.Length * 8);
        foreach (double v in values)
        {
            BinaryPrimitives.WriteDoubleLittleEndian(_buffer.GetSpan(8), v);
            _buffer.Advance(8);
        }
    }

    public void PackedVarint(int field, ReadOnlySpan<long> values)
    {
        var inner = new ProtobufWriter();
        foreach (long v in values)
        {
            inner.RawVarint((ulong)v);
        }

        Bytes(field, inner.WrittenSpan);
    }

    /// <summary>A nested message, written by <paramref name="body"/>.</summary>
    public void Message<TState>(int field, TState state, Action<ProtobufWriter, TState> body)
    {
        var inner = new ProtobufWriter();
        body(inner, state);
        Bytes(field, inner.WrittenSpan);
    }

    private void Tag(int field, int wireType) => RawVarint((ulong)((field << 3) | wireType));

    private void RawVarint(ulong value)
    {
        Span<byte> span = _buffer.GetSpan(10);
        int i = 0;
        while (value >= 0x80)
        {
            span[i++] = (byte)(value | 0x80);
            value >>= 7;
        }

        span[i++] = (byte)value;
        _buffer.Advance(i);
    }
}
