using System.Collections.Frozen;
using System.Text;
using PerCpu.Families;

namespace PerCpu.Formats;

/// <summary>The Prometheus names of one family, derived once from its <see cref="MetricDescriptor"/>.</summary>
public sealed class PrometheusNames
{
    internal PrometheusNames(string name, string textFamilyName, string sampleName, string? unit, string type, IReadOnlyList<string> labelNames)
    {
        Name = name;
        TextFamilyName = textFamilyName;
        SampleName = sampleName;
        Unit = unit;
        Type = type;
        LabelNames = labelNames;
    }

    /// <summary>The metric name without <c>_total</c>: the OpenMetrics family name, and the base of histogram samples.</summary>
    public string Name { get; }

    /// <summary>The family name of the 0.0.4 text format (with <c>_total</c> for counters).</summary>
    public string TextFamilyName { get; }

    /// <summary>The name of a counter or gauge sample (<c>_total</c> for counters).</summary>
    public string SampleName { get; }

    /// <summary>The Prometheus unit (<c>seconds</c>), or null.</summary>
    public string? Unit { get; }

    /// <summary>The Prometheus type: <c>counter</c>, <c>gauge</c> or <c>histogram</c>.</summary>
    public string Type { get; }

    /// <summary>Sanitized label names, in descriptor order.</summary>
    public IReadOnlyList<string> LabelNames { get; }

    /// <summary>The names in UTF-8, for the text writer.</summary>
    internal PrometheusTextWriter.FamilyBytes? Bytes { get; set; }

    /// <summary>
    /// Every name this family takes in a scrape: its family name and each sample name (<c>x_total</c> of a counter
    /// <c>x</c>; <c>_bucket</c>, <c>_count</c>, <c>_sum</c> of a histogram). A family any of whose names another family
    /// already took is left out of the scrape, so a counter <c>x</c> and a gauge <c>x_total</c> never both appear.
    /// </summary>
    public IReadOnlyList<string> Reserved => _reserved ??= Type switch
    {
        "histogram" => [Name, Name + "_bucket", Name + "_count", Name + "_sum"],
        _ => Name == SampleName ? [Name] : [Name, SampleName],
    };

    private string[]? _reserved;

    /// <summary>Takes every name of <see cref="Reserved"/> in <paramref name="taken"/>, or none when one is taken already.</summary>
    /// <param name="taken">The names written so far in one scrape.</param>
    /// <returns>Whether the family may be written.</returns>
    public bool TryReserve(ISet<string> taken)
    {
        ArgumentNullException.ThrowIfNull(taken);
        foreach (string name in Reserved)
        {
            if (taken.Contains(name))
            {
                return false;
            }
        }

        foreach (string name in Reserved)
        {
            taken.Add(name);
        }

        return true;
    }
}

/// <summary>
/// OpenTelemetry's Prometheus compatibility rules, so that dashboards written for the OpenTelemetry Prometheus exporter
/// work unchanged: invalid characters become <c>_</c> (runs collapse to one), a leading digit gets a <c>_</c> prefix,
/// the UCUM unit becomes a suffix (<c>s</c> → <c>_seconds</c>, <c>By/s</c> → <c>_bytes_per_second</c>, annotations
/// such as <c>{order}</c> and the dimensionless <c>1</c> add none) unless the name already ends with it, and monotonic
/// counters end in <c>_total</c>. These are the rules the .NET OpenTelemetry Prometheus exporter 1.20.1-beta.1
/// applies: in particular it adds no <c>_ratio</c> to a gauge of unit <c>1</c> (the OpenTelemetry specification allows
/// one), so PerCpu adds none either; tests/StackParityApp checks each rule against that exporter.
/// </summary>
public static class PrometheusNaming
{
    private static readonly FrozenDictionary<string, string> s_units = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["d"] = "days", ["h"] = "hours", ["min"] = "minutes", ["s"] = "seconds", ["ms"] = "milliseconds",
        ["us"] = "microseconds", ["ns"] = "nanoseconds",
        ["By"] = "bytes", ["KiBy"] = "kibibytes", ["MiBy"] = "mebibytes", ["GiBy"] = "gibibytes", ["TiBy"] = "tibibytes",
        ["KBy"] = "kilobytes", ["MBy"] = "megabytes", ["GBy"] = "gigabytes", ["TBy"] = "terabytes",
        ["m"] = "meters", ["V"] = "volts", ["A"] = "amperes", ["J"] = "joules", ["W"] = "watts", ["g"] = "grams",
        ["Cel"] = "celsius", ["Hz"] = "hertz", ["%"] = "percent",
    }.ToFrozenDictionary(StringComparer.Ordinal);

    private static readonly FrozenDictionary<string, string> s_perUnits = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["s"] = "second", ["m"] = "minute", ["h"] = "hour", ["d"] = "day", ["w"] = "week", ["mo"] = "month", ["y"] = "year",
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>The Prometheus names of <paramref name="descriptor"/> (cached on it).</summary>
    /// <param name="descriptor">The family.</param>
    /// <returns>The names.</returns>
    public static PrometheusNames For(MetricDescriptor descriptor)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        if (descriptor.PrometheusNames is { } cached)
        {
            return cached;
        }

        string name = Sanitize(descriptor.Name);
        string? unit = Unit(descriptor.Unit, descriptor.Type);
        bool counter = descriptor.Type == MetricType.Counter;
        if (counter && name.EndsWith("_total", StringComparison.Ordinal) && name.Length > "_total".Length)
        {
            name = name[..^"_total".Length];
        }

        if (unit is not null && !name.EndsWith("_" + unit, StringComparison.Ordinal))
        {
            name = name + "_" + unit;
        }

        string type = descriptor.Type switch
        {
            MetricType.Counter => "counter",
            MetricType.Histogram => "histogram",
            _ => "gauge",
        };
        string sample = counter ? name + "_total" : name;
        var names = new PrometheusNames(name, counter ? name + "_total" : name, sample, unit, type, [.. descriptor.LabelNames.Select(SanitizeLabel)]);
        descriptor.PrometheusNames = names;
        return names;
    }

    /// <summary>The Prometheus unit suffix of a UCUM unit, or null when it adds none.</summary>
    /// <param name="unit">The UCUM unit.</param>
    /// <param name="type">The metric type.</param>
    /// <returns>The suffix without the leading <c>_</c>, or null.</returns>
    public static string? Unit(string? unit, MetricType type)
    {
        if (string.IsNullOrEmpty(unit))
        {
            return null;
        }

        if (unit == "1")
        {
            return null; // dimensionless: no suffix and no UNIT, on every type, as the OpenTelemetry exporter writes it
        }

        // Annotations in curly braces carry no unit.
        var plain = new StringBuilder(unit.Length);
        int depth = 0;
        foreach (char c in unit)
        {
            if (c == '{')
            {
                depth++;
            }
            else if (c == '}')
            {
                depth = Math.Max(0, depth - 1);
            }
            else if (depth == 0)
            {
                plain.Append(c);
            }
        }

        string u = plain.ToString().Trim();
        if (u.Length == 0)
        {
            return null;
        }

        int slash = u.IndexOf('/', StringComparison.Ordinal);
        string? result;
        if (slash >= 0)
        {
            string top = u[..slash], bottom = u[(slash + 1)..];
            string? topName = top.Length == 0 ? null : s_units.GetValueOrDefault(top, top);
            string bottomName = s_perUnits.GetValueOrDefault(bottom, bottom);
            result = topName is null ? "per_" + bottomName : topName + "_per_" + bottomName;
        }
        else
        {
            result = s_units.GetValueOrDefault(u, u);
        }

        result = Sanitize(result).Trim('_');
        return result.Length == 0 ? null : result;
    }

    /// <summary>A metric name with invalid characters replaced by <c>_</c> (runs collapsed), never starting with a digit.</summary>
    /// <param name="name">The name.</param>
    /// <returns>A valid Prometheus metric name.</returns>
    public static string Sanitize(string name) => Clean(name, allowColon: true);

    /// <summary>A label name with invalid characters replaced by <c>_</c> (runs collapsed), never starting with a digit.</summary>
    /// <param name="name">The attribute key.</param>
    /// <returns>A valid Prometheus label name.</returns>
    public static string SanitizeLabel(string name) => Clean(name, allowColon: false);

    /// <summary>
    /// The label pairs a series is exposed with in every Prometheus format (text, OpenMetrics, protobuf), decided once per
    /// label set and kept on it: names sanitized; keys that sanitize to one name make one label whose values are joined
    /// with <c>;</c> in the order of the original keys (OpenTelemetry's rule); on a histogram, a key that sanitizes to the
    /// reserved <c>le</c> is exposed as <c>_le</c> (joined with a key named so, if any), so a bucket never has two
    /// <c>le</c> labels.
    /// </summary>
    /// <param name="labels">The series' labels.</param>
    /// <param name="histogram">Whether the series is a histogram's.</param>
    /// <returns>The pairs, in the order of the first key of each.</returns>
    public static IReadOnlyList<KeyValuePair<string, string>> ExposedLabels(MetricLabels labels, bool histogram)
    {
        ArgumentNullException.ThrowIfNull(labels);
        ref KeyValuePair<string, string>[]? cached = ref histogram ? ref labels.ExposedHistogram : ref labels.Exposed;
        return cached ??= Expose(labels, histogram);
    }

    private static KeyValuePair<string, string>[] Expose(MetricLabels labels, bool histogram)
    {
        if (labels.Count == 0)
        {
            return [];
        }

        var merged = new List<(string Name, List<(string Key, string Value)> Parts)>(labels.Count);
        for (int i = 0; i < labels.Count; i++)
        {
            string name = SanitizeLabel(labels.Names[i]);
            if (histogram && name == "le")
            {
                name = "_le";
            }

            int at = merged.FindIndex(m => m.Name == name);
            if (at < 0)
            {
                merged.Add((name, [(labels.Names[i], labels.Values[i])]));
            }
            else
            {
                merged[at].Parts.Add((labels.Names[i], labels.Values[i]));
            }
        }

        return [.. merged.Select(m => new KeyValuePair<string, string>(
            m.Name,
            m.Parts.Count == 1 ? m.Parts[0].Value : string.Join(';', m.Parts.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => p.Value))))];
    }

    private static string Clean(string name, bool allowColon)
    {
        ArgumentNullException.ThrowIfNull(name);
        var b = new StringBuilder(name.Length + 1);
        foreach (char c in name)
        {
            bool ok = char.IsAsciiLetterOrDigit(c) || c == '_' || (allowColon && c == ':');
            char next = ok ? c : '_';
            if (next == '_' && b.Length > 0 && b[^1] == '_')
            {
                continue;
            }

            b.Append(next);
        }

        if (b.Length == 0 || char.IsAsciiDigit(b[0]))
        {
            b.Insert(0, '_');
        }

        return b.ToString();
    }
}
