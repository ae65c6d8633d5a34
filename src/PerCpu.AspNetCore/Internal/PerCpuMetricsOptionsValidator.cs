using Microsoft.Extensions.Options;

namespace PerCpu.AspNetCore.Internal;

/// <summary>Fails startup (ValidateOnStart) with a message that names the option and the fix.</summary>
internal sealed class PerCpuMetricsOptionsValidator : IValidateOptions<PerCpuMetricsOptions>
{
    public ValidateOptionsResult Validate(string? name, PerCpuMetricsOptions options)
    {
        var failures = new List<string>();
        if (options.HistogramScale is < HistogramLayout.MinScale or > HistogramLayout.MaxScale)
        {
            failures.Add($"PerCpuMetricsOptions.HistogramScale is {options.HistogramScale}; use {HistogramLayout.MinScale} to {HistogramLayout.MaxScale} (3 gives 8 buckets per power of two and 4.3% quantile error).");
        }

        if (options.HistogramMinExponent >= options.HistogramMaxExponent || options.HistogramMinExponent < -1000 || options.HistogramMaxExponent > 1000)
        {
            failures.Add($"PerCpuMetricsOptions.HistogramMinExponent ({options.HistogramMinExponent}) must be below HistogramMaxExponent ({options.HistogramMaxExponent}), both within -1000..1000 (defaults -17 and 8: 7.6 µs to 256 s).");
        }

        if (options.DurationBoundaries is null)
        {
            failures.Add("PerCpuMetricsOptions.DurationBoundaries is null; use an empty list for no classic buckets.");
        }
        else
        {
            double low = Math.ScaleB(1, options.HistogramMinExponent), high = Math.ScaleB(1, options.HistogramMaxExponent);
            for (int i = 0; i < options.DurationBoundaries.Count; i++)
            {
                double b = options.DurationBoundaries[i];
                if (!double.IsFinite(b) || b <= low || b > high)
                {
                    failures.Add($"PerCpuMetricsOptions.DurationBoundaries[{i}] = {b} is outside ({low}, {high}] seconds; remove it or widen HistogramMinExponent/HistogramMaxExponent.");
                }
                else if (i > 0 && b <= options.DurationBoundaries[i - 1])
                {
                    failures.Add($"PerCpuMetricsOptions.DurationBoundaries must be strictly increasing: [{i}] = {b} follows {options.DurationBoundaries[i - 1]}; sort them and remove duplicates.");
                }
            }
        }

        if (options.MaxSeriesPerMetric is < 1 or > 1_000_000)
        {
            failures.Add($"PerCpuMetricsOptions.MaxSeriesPerMetric is {options.MaxSeriesPerMetric}; use 1 to 1000000 (default 2000). It bounds memory under a flood of label combinations.");
        }

        if (options.MaxLabelValueLength is < 16 or > 65536)
        {
            failures.Add($"PerCpuMetricsOptions.MaxLabelValueLength is {options.MaxLabelValueLength}; use 16 to 65536 (default 1024). Longer label values are cut to it.");
        }

        if (options.ObservableCallbackBudget <= TimeSpan.Zero || options.ObservableCallbackBudget > TimeSpan.FromSeconds(60))
        {
            failures.Add($"PerCpuMetricsOptions.ObservableCallbackBudget is {options.ObservableCallbackBudget}; use more than 0 and at most 60 s (default 1 s). A scrape waits that long for observable callbacks.");
        }

        if (options.MaxConcurrentScrapes is < 1 or > 1000)
        {
            failures.Add($"PerCpuMetricsOptions.MaxConcurrentScrapes is {options.MaxConcurrentScrapes}; use 1 to 1000 (default 64). Scrapes beyond it get 503 with Retry-After.");
        }

        if (options.ScrapeTimeout <= TimeSpan.Zero || options.ScrapeTimeout > TimeSpan.FromMinutes(10))
        {
            failures.Add($"PerCpuMetricsOptions.ScrapeTimeout is {options.ScrapeTimeout}; use more than 0 and at most 10 minutes (default 30 s). A reader slower than it is cut off.");
        }

        if (options.RateWindowsSeconds is null || options.RateWindowsSeconds.Count == 0)
        {
            failures.Add("PerCpuMetricsOptions.RateWindowsSeconds is empty; give at least one window in seconds, e.g. [1, 10, 60].");
        }
        else if (options.RateWindowsSeconds.Any(w => w is < 1 or > 3600) || options.RateWindowsSeconds.Distinct().Count() != options.RateWindowsSeconds.Count)
        {
            failures.Add($"PerCpuMetricsOptions.RateWindowsSeconds [{string.Join(", ", options.RateWindowsSeconds)}] must be distinct whole seconds from 1 to 3600.");
        }

        if (options.NativeHistogramScale is < 0 or > HistogramLayout.MaxScale)
        {
            failures.Add($"PerCpuMetricsOptions.NativeHistogramScale is {options.NativeHistogramScale}; use 0 to {HistogramLayout.MaxScale} (Prometheus's native histograms allow no finer scale), or null for each histogram's own.");
        }

        if (options.HistogramBoundaries is { } hb)
        {
            for (int i = 0; i < hb.Count; i++)
            {
                if (!double.IsFinite(hb[i]) || hb[i] <= 0 || (i > 0 && hb[i] <= hb[i - 1]))
                {
                    failures.Add($"PerCpuMetricsOptions.HistogramBoundaries[{i}] = {hb[i]}: give positive, finite, strictly increasing boundaries (or null for the defaults).");
                    break;
                }
            }
        }

        if (options.Meters is null)
        {
            failures.Add("PerCpuMetricsOptions.Meters is null; use Meters.Clear() to collect no Meter API instruments.");
        }
        else
        {
            foreach (string? meter in options.Meters)
            {
                if (string.IsNullOrWhiteSpace(meter) || meter.IndexOf('*', StringComparison.Ordinal) is int star && star >= 0 && star != meter.Length - 1)
                {
                    failures.Add($"PerCpuMetricsOptions.Meters holds '{meter}'; give a meter name, or a prefix ending in '*' (e.g. \"Shop\" or \"Microsoft.AspNetCore.*\").");
                }
            }
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
