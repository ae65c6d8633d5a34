using System.Buffers;
using System.Globalization;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace PerCpu.Families;

/// <summary>
/// How a Meter API tag is identified: by its key and its value <em>as exposed</em> (the invariant string a scrape writes),
/// so the value 200 given as <see cref="int"/>, <see cref="long"/>, <see cref="short"/> or <see cref="string"/> is one
/// series, never four series that print the same labels. The hash covers every character of the values and is seeded
/// per process, so values that arrive from requests cannot be chosen to share a probe chain.
/// </summary>
/// <remarks>
/// The hash reads 16 bytes per step, mixing each pair of words with a multiply and a xor-shift, from a random 64-bit
/// seed drawn once per process: a 26-character route costs four multiplies. It is not a cryptographic hash: it keeps
/// values that differ anywhere apart, and chains short, for every seed. Integers are hashed from their decimal
/// digits, written on the stack, so an <see cref="int"/> 200 and the string "200" hash alike without allocating.
/// Rendering follows the exposition: null is empty, booleans are <c>true</c>/<c>false</c>, numbers and other
/// <see cref="IFormattable"/> values use the invariant culture, anything else its <see cref="object.ToString"/> (which
/// may throw: the caller counts that measurement as invalid).
/// </remarks>
internal static class TagValues
{
    /// <summary>Longest value rendered on the stack; longer ones (rare) are rendered to a string.</summary>
    private const int StackChars = 128;

    private const ulong K1 = 0xA0761D6478BD642Fu;
    private const ulong K2 = 0xE7037ED1A0B428DBu;
    private const ulong K3 = 0x8EBC6AF09C88C6E3u;

    private static readonly ulong s_seed = NewSeed();

    /// <summary>The longest label value exposed by default: no real label comes near it; a longer one is cut.</summary>
    public const int DefaultMaxLength = 1024;

    /// <summary>The mark that ends a value cut at the maximum length (the value then has exactly that length).</summary>
    public const char TruncationMark = '\u2026';

    /// <summary>The string a value is exposed as, cut to <paramref name="max"/> characters (the last one the mark).</summary>
    public static string Render(object? value, int max)
    {
        string text = Render(value);
        return text.Length <= max ? text : string.Concat(text.AsSpan(0, max - 1), [TruncationMark]);
    }

    /// <summary>The string a value is exposed as, uncut.</summary>
    public static string Render(object? value) => value switch
    {
        null => "",
        string s => s,
        bool b => b ? "true" : "false",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture) ?? "",
        _ => value.ToString() ?? "",
    };

    /// <summary>
    /// The hash of one tag: every character of its rendered value, and a fingerprint of its key (length and three
    /// characters). Keys come from code, not from requests, and equal hashes are always compared key by key; hashing
    /// whole keys too put three more dependent multiplies per tag on the path (a 3-tag set took 60 ns to hash).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong TagHash(string? key, object? value, int max) => Mum(ValueHash(value, max) ^ K1, KeyPrint(key) ^ K2);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong KeyPrint(string? key)
    {
        if (string.IsNullOrEmpty(key))
        {
            return 0;
        }

        int n = key.Length;
        return ((ulong)(uint)n << 48) ^ ((ulong)key[0] << 32) ^ ((ulong)key[n >> 1] << 16) ^ key[n - 1];
    }

    /// <summary>The hash of a value's rendering, without rendering it to a string where it is a string or a number.</summary>
    /// <param name="value">The value.</param>
    /// <param name="max">The longest rendering exposed (<see cref="Render(object?, int)"/>).</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong ValueHash(object? value, int max)
    {
        if (value is string s)
        {
            return s.Length <= max ? HashChars(s) : HashCut(s, max);
        }

        return value is null ? HashChars("") : OtherValueHash(value, max);
    }

    /// <summary>The hash of a rendering longer than <paramref name="max"/>, as it is exposed: cut, the mark last.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)] // hostile lengths only
    [SkipLocalsInit]
    private static ulong HashCut(ReadOnlySpan<char> text, int max)
    {
        char[]? rented = null;
        Span<char> cut = max <= 1024 ? stackalloc char[max] : (rented = ArrayPool<char>.Shared.Rent(max)).AsSpan(0, max);
        text[..(max - 1)].CopyTo(cut);
        cut[max - 1] = TruncationMark;
        ulong hash = HashChars(cut);
        if (rented is not null)
        {
            ArrayPool<char>.Shared.Return(rented);
        }

        return hash;
    }

    /// <summary>Whether <paramref name="text"/>, cut to <paramref name="max"/>, is <paramref name="rendered"/>.</summary>
    private static bool CutEquals(string rendered, ReadOnlySpan<char> text, int max) =>
        text.Length <= max
            ? text.SequenceEqual(rendered)
            : rendered.Length == max && rendered[max - 1] == TruncationMark && text[..(max - 1)].SequenceEqual(rendered.AsSpan(0, max - 1));

    [MethodImpl(MethodImplOptions.NoInlining)] // numbers and the rest: kept out of the string path's code
    [SkipLocalsInit] // the buffer is written before it is read
    private static ulong OtherValueHash(object value, int max)
    {
        Span<char> buffer = stackalloc char[StackChars];
        long integer;
        switch (value)
        {
            case int i: integer = i; break;
            case long l: integer = l; break;
            case short h: integer = h; break;
            case byte b: integer = b; break;
            default:
                ReadOnlySpan<char> text = TryRender(value, buffer, out int written) ? buffer[..written] : Render(value);
                return text.Length <= max ? HashChars(text) : HashCut(text, max);
        }

        // Decimal digits written right to left (a status code: three divisions), as the invariant culture renders them.
        int at = buffer.Length;
        ulong magnitude = integer < 0 ? (ulong)-(integer + 1) + 1 : (ulong)integer;
        do
        {
            (magnitude, ulong digit) = Math.DivRem(magnitude, 10);
            buffer[--at] = (char)('0' + digit);
        }
        while (magnitude != 0);

        if (integer < 0)
        {
            buffer[--at] = '-';
        }

        return buffer.Length - at <= max ? HashChars(buffer[at..]) : HashCut(buffer[at..], max);
    }

    /// <summary>Whether <paramref name="value"/> renders as <paramref name="rendered"/>.</summary>
    /// <param name="rendered">A stored value's rendering.</param>
    /// <param name="raw">The stored value as first given (compared by reference and type first).</param>
    /// <param name="value">The value of a measurement.</param>
    /// <param name="max">The longest rendering exposed.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool RendersAs(string rendered, object? raw, object? value, int max)
    {
        if (ReferenceEquals(raw, value))
        {
            return true;
        }

        if (value is string s)
        {
            return s.Length <= max ? string.Equals(rendered, s, StringComparison.Ordinal) : CutEquals(rendered, s, max);
        }

        return OtherRendersAs(rendered, raw, value, max);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    [SkipLocalsInit] // the buffer is written before it is read
    private static bool OtherRendersAs(string rendered, object? raw, object? value, int max)
    {
        if (value is null)
        {
            return rendered.Length == 0;
        }

        if (raw is int or long or short or byte or bool or uint or ulong or ushort or sbyte && raw.GetType() == value.GetType() && raw.Equals(value))
        {
            return true; // equal integers of one type render alike (not so for 0.0 and -0.0, or 1.0m and 1.00m, which are Equal)
        }

        Span<char> buffer = stackalloc char[StackChars];
        return TryRender(value, buffer, out int written) ? CutEquals(rendered, buffer[..written], max) : CutEquals(rendered, Render(value), max);
    }

    /// <summary>Writes the rendering of a value that is not a string into <paramref name="buffer"/>, if it fits.</summary>
    private static bool TryRender(object value, Span<char> buffer, out int written)
    {
        if (value is bool b)
        {
            string text = b ? "true" : "false";
            written = text.Length;
            return text.TryCopyTo(buffer);
        }

        if (value is ISpanFormattable f)
        {
            return f.TryFormat(buffer, out written, default, CultureInfo.InvariantCulture);
        }

        written = 0;
        return false;
    }

    /// <summary>A seeded hash of every character.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong HashChars(ReadOnlySpan<char> chars)
    {
        ReadOnlySpan<byte> bytes = MemoryMarshal.AsBytes(chars);
        ref byte p = ref MemoryMarshal.GetReference(bytes);
        int n = bytes.Length;
        ulong a, b;
        ulong h = s_seed ^ (ulong)n;
        if (n <= 16)
        {
            if (n >= 8)
            {
                a = Read64(ref p, 0);
                b = Read64(ref p, n - 8);
            }
            else if (n >= 4)
            {
                a = ((ulong)Read32(ref p, 0) << 32) | Read32(ref p, n - 4);
                b = 0;
            }
            else
            {
                a = n == 0 ? 0UL : Unsafe.ReadUnaligned<ushort>(ref p);
                b = 0;
            }
        }
        else
        {
            int i = 0;
            for (; n - i > 16; i += 16)
            {
                h = Mum(Read64(ref p, i) ^ K1, Read64(ref p, i + 8) ^ h);
            }

            a = Read64(ref p, n - 16);
            b = Read64(ref p, n - 8);
        }

        return Mum(K2 ^ (ulong)n, Mum(a ^ K1, b ^ h));
    }

    /// <summary>Mixes a combined tag-set hash into a table index hash.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Finish(ulong sum) => (int)Mum(sum ^ K3, s_seed ^ K1);

    /// <summary>
    /// Mixes two words: a 64-bit multiply of their xor-combination, then a xor-shift that folds the high bits into the
    /// low ones. A 128-bit product (wyhash's) mixed better but spilled its low half through the stack on .NET 10, which
    /// cost more than its gain on this path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Mum(ulong a, ulong b)
    {
        ulong x = (a ^ BitOperations.RotateLeft(b, 29)) * 0x9FB21C651E98DF25u;
        return x ^ (x >> 28);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Read64(ref byte p, int offset) => Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, offset));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Read32(ref byte p, int offset) => Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref p, offset));

    private static ulong NewSeed()
    {
        Span<byte> bytes = stackalloc byte[sizeof(ulong)];
        RandomNumberGenerator.Fill(bytes);
        return BitConverter.ToUInt64(bytes) | 1;
    }
}
