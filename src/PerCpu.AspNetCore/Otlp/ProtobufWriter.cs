using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace PerCpu.AspNetCore.Otlp;

/// <summary>
/// A minimal protocol-buffers writer: varints, fixed64/double, strings, packed repeated fields and nested messages, into
/// one buffer rented from <see cref="ArrayPool{T}.Shared"/>. A nested message (or any length-delimited field) reserves one
/// byte for its length where it starts, is written in place, and then has its length patched in; a length that needs
/// more bytes moves the message up by that many. Nothing is allocated per field or per message, so writing N series
/// costs no memory per series once the buffer has grown. Used by the OTLP encoder and the Prometheus protobuf format.
/// Dispose returns the buffer.
/// </summary>
internal sealed class ProtobufWriter : IDisposable
{
    private byte[] _buffer;
    private int _length;

    public ProtobufWriter(int capacity = 256)
    {
        _buffer = ArrayPool<byte>.Shared.Rent(capacity);
    }

    public ReadOnlySpan<byte> WrittenSpan => _buffer.AsSpan(0, _length);

    /// <summary>Empties the writer, keeping its buffer.</summary>
    public void Reset() => _length = 0;

    public void Dispose()
    {
        byte[] buffer = _buffer;
        _buffer = [];
        _length = 0;
        if (buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

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
        BinaryPrimitives.WriteUInt64LittleEndian(Space(8), value);
        _length += 8;
    }

    public void Double(int field, double value) => Fixed64(field, BitConverter.DoubleToUInt64Bits(value));

    public void String(int field, string value)
    {
        Tag(field, 2);
        int length = Encoding.UTF8.GetByteCount(value);
        RawVarint((ulong)length);
        Encoding.UTF8.GetBytes(value, Space(length));
        _length += length;
    }

    public void Bytes(int field, ReadOnlySpan<byte> value)
    {
        Tag(field, 2);
        RawVarint((ulong)value.Length);
        value.CopyTo(Space(value.Length));
        _length += value.Length;
    }

    public void PackedFixed64(int field, ReadOnlySpan<long> values)
    {
        Tag(field, 2);
        RawVarint((ulong)values.Length * 8);
        Span<byte> space = Space(values.Length * 8);
        for (int i = 0; i < values.Length; i++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(space[(i * 8)..], values[i]);
        }

        _length += values.Length * 8;
    }

    public void PackedDouble(int field, ReadOnlySpan<double> values)
    {
        Tag(field, 2);
        RawVarint((ulong)values.Length * 8);
        Span<byte> space = Space(values.Length * 8);
        for (int i = 0; i < values.Length; i++)
        {
            BinaryPrimitives.WriteDoubleLittleEndian(space[(i * 8)..], values[i]);
        }

        _length += values.Length * 8;
    }

    public void PackedVarint(int field, ReadOnlySpan<long> values)
    {
        int at = BeginMessage(field);
        foreach (long v in values)
        {
            RawVarint((ulong)v);
        }

        EndLength(at);
    }

    /// <summary>A nested message, written by <paramref name="body"/> in place (a static lambda and a value state allocate nothing).</summary>
    public void Message<TState>(int field, TState state, Action<ProtobufWriter, TState> body)
    {
        int at = BeginMessage(field);
        body(this, state);
        EndLength(at);
    }

    /// <summary>Starts a length-delimited field: its tag, then one byte reserved for the length; <see cref="EndLength"/> closes it.</summary>
    public int BeginMessage(int field)
    {
        Tag(field, 2);
        return BeginLength();
    }

    /// <summary>Reserves one byte for a length (a delimited message at the top level has no tag); returns where it is.</summary>
    public int BeginLength()
    {
        Space(1);
        return _length++;
    }

    /// <summary>Writes the length of what followed <paramref name="at"/>, moving it up when the length needs more than one byte.</summary>
    public void EndLength(int at)
    {
        int length = _length - at - 1;
        int size = VarintSize((ulong)length);
        if (size > 1)
        {
            Space(size - 1);
            _buffer.AsSpan(at + 1, length).CopyTo(_buffer.AsSpan(at + size)); // overlapping: CopyTo moves like memmove
            _length += size - 1;
        }

        ulong value = (ulong)length;
        int i = at;
        while (value >= 0x80)
        {
            _buffer[i++] = (byte)(value | 0x80);
            value >>= 7;
        }

        _buffer[i] = (byte)value;
    }

    private static int VarintSize(ulong value)
    {
        int size = 1;
        while (value >= 0x80)
        {
            value >>= 7;
            size++;
        }

        return size;
    }

    private void Tag(int field, int wireType) => RawVarint((ulong)((field << 3) | wireType));

    private void RawVarint(ulong value)
    {
        Span<byte> span = Space(10);
        int i = 0;
        while (value >= 0x80)
        {
            span[i++] = (byte)(value | 0x80);
            value >>= 7;
        }

        span[i++] = (byte)value;
        _length += i;
    }

    /// <summary>At least <paramref name="bytes"/> free bytes after the written ones (the buffer doubles, from the pool, as needed).</summary>
    private Span<byte> Space(int bytes)
    {
        if (_buffer.Length - _length < bytes)
        {
            byte[] grown = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer.Length * 2, _length + bytes));
            _buffer.AsSpan(0, _length).CopyTo(grown);
            if (_buffer.Length > 0)
            {
                ArrayPool<byte>.Shared.Return(_buffer);
            }

            _buffer = grown;
        }

        return _buffer.AsSpan(_length);
    }
}
