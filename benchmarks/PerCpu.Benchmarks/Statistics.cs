using System.Globalization;

namespace PerCpu.Benchmarks;

/// <summary>The figures every report uses: medians with min-max, and command-line options.</summary>
internal static class Statistics
{
    public static double Median(IReadOnlyCollection<double> values)
    {
        if (values.Count == 0)
        {
            return double.NaN;
        }

        double[] s = [.. values.Order()];
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[(s.Length / 2) - 1] + s[s.Length / 2]) / 2;
    }

    /// <summary>"median (min-max)" with the given number format.</summary>
    public static string Summary(IReadOnlyCollection<double> values, string format, string separator = "-")
    {
        string F(double v) => v.ToString(format, CultureInfo.InvariantCulture);
        return $"{F(Median(values))} ({F(values.Min())}{separator}{F(values.Max())})";
    }

    public static string Arg(string[] args, string name, string fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }
}
