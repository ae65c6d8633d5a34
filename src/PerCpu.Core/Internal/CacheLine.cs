namespace PerCpu.Internal;

/// <summary>
/// The false-sharing distance PerCpu pads to.
/// </summary>
/// <remarks>
/// 128 bytes, not 64: x86-64 parts since Sandy Bridge fetch cache lines in aligned pairs (the adjacent-line
/// prefetcher, Intel optimization manual 3.7.3), and Apple/Neoverse arm64 cores use 128-byte lines, so two
/// hot cells 64 bytes apart still ping-pong. crossbeam's <c>CachePadded</c> and folly's
/// <c>hardware_destructive_interference_size</c> pick 128 for the same reason. Measured with the contention
/// harness (<c>dotnet run -c Release --project benchmarks/PerCpu.Benchmarks -- contention --stride</c>);
/// the figures are in benchmarks/README.md.
/// </remarks>
internal static class CacheLine
{
    /// <summary>Bytes between two cells written by different CPUs.</summary>
    public const int Size = 128;

    /// <summary><see cref="Size"/> in <see cref="long"/> elements.</summary>
    public const int Int64s = Size / sizeof(long);
}
