using System.Globalization;
using System.Text.RegularExpressions;

namespace PerCpu.AspNetCore.Tests;

/// <summary>A strict parser of the exposition formats: every non-comment line must be a well-formed sample.</summary>
internal sealed partial class Scrape
{
    private Scrape(List<Sample> samples, List<string> comments, string text)
    {
        Samples = samples;
        Comments = comments;
        Text = text;
    }

    public List<Sample> Samples { get; }

    public List<string> Comments { get; }

    public string Text { get; }

    public static Scrape Parse(string text)
    {
        var samples = new List<Sample>();
        var comments = new List<string>();
        foreach (string line in text.Split('\n'))
        {
            if (line.Length == 0)
            {
                continue;
            }

            if (line.StartsWith('#'))
            {
                comments.Add(line);
                continue;
            }

            Match m = SampleLine().Match(line);
            if (!m.Success)
            {
                throw new FormatException("not a sample line: " + line);
            }

            var labels = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (Match l in LabelPair().Matches(m.Groups["labels"].Value))
            {
                labels.Add(l.Groups[1].Value, Regex.Unescape(l.Groups[2].Value));
            }

            string raw = m.Groups["value"].Value;
            double value = raw switch
            {
                "+Inf" => double.PositiveInfinity,
                "-Inf" => double.NegativeInfinity,
                _ => double.Parse(raw, NumberStyles.Float, CultureInfo.InvariantCulture),
            };
            samples.Add(new Sample(m.Groups["name"].Value, labels, value, m.Groups["exemplar"].Success ? m.Groups["exemplar"].Value : null));
        }

        return new Scrape(samples, comments, text);
    }

    public IEnumerable<Sample> Named(string name) => Samples.Where(s => s.Name == name);

    /// <summary>The request count of every duration series, keyed by route/method/status(/error).</summary>
    public Dictionary<string, double> CountsByRouteMethodStatus() =>
        Named("http_server_request_duration_seconds_count").ToDictionary(
            s => s.Labels.TryGetValue("otel_metric_overflow", out _) ? "overflow" : $"{RouteOf(s.Labels)} {s.Labels["http_request_method"]} {s.Labels["http_response_status_code"]}{(s.Labels.TryGetValue("error_type", out string? e) ? " " + e : "")}",
            s => s.Value);

    /// <summary>A series' route for test keys: its <c>http_route</c>, else <c>unhandled</c> (is_unhandled) or <c>-</c>.</summary>
    public static string RouteOf(Dictionary<string, string> labels) =>
        labels.TryGetValue("http_route", out string? route) ? route
        : labels.GetValueOrDefault("aspnetcore_request_is_unhandled") == "true" ? "unhandled"
        : "-";

    /// <summary>The same for a measurement's tags (attribute keys, typed values).</summary>
    public static string RouteOf(IReadOnlyDictionary<string, object?> tags) =>
        tags.TryGetValue("http.route", out object? route) ? (string)route!
        : tags.GetValueOrDefault("aspnetcore.request.is_unhandled") is true ? "unhandled"
        : "-";

    [GeneratedRegex("""^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>(?:[^"}]|"(?:[^"\\]|\\.)*")*)\})? (?<value>\S+)(?: # (?<exemplar>\{.*))?$""")]
    private static partial Regex SampleLine();

    [GeneratedRegex("""([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?""")]
    private static partial Regex LabelPair();

    /// <summary>A sample line; <paramref name="Exemplar"/> is the OpenMetrics exemplar after <c> # </c>, if any.</summary>
    public sealed record Sample(string Name, Dictionary<string, string> Labels, double Value, string? Exemplar = null);
}
