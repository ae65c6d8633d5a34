using System.Buffers;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// An <see cref="IBufferWriter{T}"/> over pooled 64 KB chunks (never on the large-object heap): the scrape is written
/// into it once, as UTF-8, and every scrape that shares the rendering copies the chunks to its response.
/// </summary>
internal sealed class ChunkWriter : IBufferWriter<byte>
{
    public const int ChunkSize = 64 * 1024;

    /// <summary>
    /// The chunks' own pool: the shared pool keeps only a few arrays per size, so a scrape of thousands of series would
    /// allocate (and the GC collect) most of its chunks on every scrape. This one keeps up to 1024 chunks (64 MB), enough
    /// for about 20,000 histogram series, and reuses them.
    /// </summary>
    public static readonly ArrayPool<byte> Pool = ArrayPool<byte>.Create(ChunkSize, 1024);

    private readonly List<(byte[] Bytes, int Length)> _done = [];
    private byte[] _current = Pool.Rent(ChunkSize);
    private int _used;

    public void Advance(int count) => _used += count;

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _current.AsMemory(_used);
    }

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _current.AsSpan(_used);
    }

    /// <summary>The chunks written, in order; the caller returns them to the pool.</summary>
    public (byte[] Bytes, int Length)[] Complete()
    {
        _done.Add((_current, _used));
        _current = [];
        return [.. _done];
    }

    private void Ensure(int sizeHint)
    {
        int need = Math.Max(sizeHint, 1);
        if (_current.Length - _used >= need)
        {
            return;
        }

        _done.Add((_current, _used));
        _current = need <= ChunkSize ? Pool.Rent(ChunkSize) : new byte[need]; // a label set over 64 KB: its own array
        _used = 0;
    }
}
