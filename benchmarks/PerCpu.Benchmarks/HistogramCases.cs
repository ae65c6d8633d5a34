namespace PerCpu.Benchmarks;

/// <summary>Histogram cases (filled in with PerCpuHistogram).</summary>
internal static class HistogramCases
{
    public static void Add(List<Case> cases, List<(string, string, string)> ratios)
    {
        _ = cases;
        _ = ratios;
    }
}
