using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using PrometheusServer = PerCpu.AspNetCore.Tests.PrometheusEndToEndTests.PrometheusServer;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// PerCpu's Grafana dashboard (docs/grafana/percpu-aspnetcore.json) against real Prometheus servers scraping the sample
/// under a mixed load: every query of every panel must return data. Panels on native histograms run on a Prometheus
/// with <c>--enable-feature=native-histograms</c> (it scrapes PerCpu's protobuf format), the others on a default one
/// (OpenMetrics). With <c>PERCPU_DASHBOARD_SVG</c> set, the panels are drawn from the same queries' results into that
/// file (the README's picture).
/// </summary>
public sealed class DashboardTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task EveryPanelQuery_ReturnsDataFromARealPrometheus()
    {
        string path = Path.Combine(OtlpReceiver.RepositoryRoot(), "docs", "grafana", "percpu-aspnetcore.json");
        using JsonDocument dashboard = JsonDocument.Parse(await File.ReadAllTextAsync(path, Ct));
        List<Panel> panels = [.. Panels(dashboard.RootElement)];
        Assert.True(panels.Count >= 15, $"{panels.Count} panels");
        Assert.Contains(dashboard.RootElement.GetProperty("templating").GetProperty("list").EnumerateArray(), v => v.GetProperty("name").GetString() == "datasource");

        await using SampleProcess sample = await SampleProcess.StartAsync();
        await using PrometheusServer classic = await PrometheusServer.StartAsync(sample.Port, Ct);
        await using PrometheusServer native = await PrometheusServer.StartAsync(sample.Port, Ct, "--enable-feature=native-histograms");

        // A mixed load for 12 s: routes with parameters, a POST, 404s, slow requests, 5xx with an exception, requests
        // that match nothing.
        DateTimeOffset start = DateTimeOffset.UtcNow;
        using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 16 }) { BaseAddress = sample.BaseAddress };
        for (var clock = Stopwatch.StartNew(); clock.Elapsed < TimeSpan.FromSeconds(12);)
        {
            await Parallel.ForAsync(0, 100, new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = Ct }, async (i, ct) =>
            {
                using HttpResponseMessage r = (i % 20) switch
                {
                    0 => await client.GetAsync("/slow?ms=" + (20 + (i % 60)), ct),
                    1 => await client.GetAsync("/error", ct),
                    2 => await client.GetAsync("/no/such/route/" + (i % 5), ct),
                    3 => await client.GetAsync("/missing/" + i, ct),
                    4 => await client.PostAsync("/items", new StringContent($"{{\"id\":{i},\"name\":\"x\"}}", Encoding.UTF8, "application/json"), ct),
                    _ => await client.GetAsync("/items/" + i, ct),
                };
            });
            await Task.Delay(100, Ct);
        }

        // Every query answers with data (rates need two scrapes in their window: wait for them).
        var missing = new List<string>();
        for (var clock = Stopwatch.StartNew(); ; await Task.Delay(500, Ct))
        {
            missing.Clear();
            foreach (Panel panel in panels)
            {
                foreach (Target target in panel.Targets)
                {
                    if (await InstantAsync(panel.Native ? native.Api : classic.Api, target.Expr) is not { Count: > 0 } values || values.All(v => !double.IsFinite(v.Value)))
                    {
                        missing.Add($"{panel.Title}: {target.Expr}");
                    }
                }
            }

            if (missing.Count == 0 || clock.Elapsed > TimeSpan.FromSeconds(30))
            {
                break;
            }
        }

        Assert.True(missing.Count == 0, "queries without data:\n" + string.Join("\n", missing));

        // The values make sense: the 5xx ratio is /error's share, and the strategy panel names a strategy and a clock source.
        List<(string Labels, double Value)> ratio = (await InstantAsync(classic.Api, Expr(panels, "5xx ratio")))!;
        Assert.InRange(ratio.Single().Value, 0.01, 0.2);
        Assert.Contains("strategy=", (await InstantAsync(classic.Api, Expr(panels, "CPU-id strategy, write path and clock")))!.Single().Labels, StringComparison.Ordinal);
        string clockQuery = panels.Single(p => p.Title == "CPU-id strategy, write path and clock").Targets[1].Expr;
        Assert.Contains("source=", (await InstantAsync(classic.Api, clockQuery))!.Single().Labels, StringComparison.Ordinal);

        if (Environment.GetEnvironmentVariable("PERCPU_DASHBOARD_SVG") is { Length: > 0 } svg)
        {
            await File.WriteAllTextAsync(svg, await RenderAsync(panels, classic, native, start, DateTimeOffset.UtcNow), Ct);
        }
    }

    private sealed record Target(string Expr, string Legend);

    private sealed record Panel(string Title, string Type, string Unit, bool Native, List<Target> Targets);

    /// <summary>The dashboard's panels with their queries, the variables replaced as Grafana would for this job.</summary>
    private static IEnumerable<Panel> Panels(JsonElement dashboard)
    {
        foreach (JsonElement p in dashboard.GetProperty("panels").EnumerateArray())
        {
            if (!p.TryGetProperty("targets", out JsonElement targets))
            {
                continue;
            }

            string title = p.GetProperty("title").GetString()!;
            yield return new Panel(title, p.GetProperty("type").GetString()!, p.GetProperty("fieldConfig").GetProperty("defaults").GetProperty("unit").GetString()!,
                title.Contains("native histograms", StringComparison.Ordinal),
                [.. targets.EnumerateArray().Select(t => new Target(
                    t.GetProperty("expr").GetString()!.Replace("$job", "sample", StringComparison.Ordinal).Replace("$__rate_interval", "30s", StringComparison.Ordinal),
                    t.GetProperty("legendFormat").GetString()!))]);
        }
    }

    private static string Expr(List<Panel> panels, string title) => panels.Single(p => p.Title == title).Targets[0].Expr;

    /// <summary>An instant query's series (labels as text) and values; null when Prometheus refused the query.</summary>
    private static async Task<List<(string Labels, double Value)>?> InstantAsync(HttpClient api, string promql)
    {
        string? body = await PrometheusEndToEndTests.TryGet(api, "/api/v1/query?query=" + Uri.EscapeDataString(promql));
        if (body is null)
        {
            return null;
        }

        using JsonDocument doc = JsonDocument.Parse(body);
        return [.. doc.RootElement.GetProperty("data").GetProperty("result").EnumerateArray().Select(r => (
            string.Join(",", r.GetProperty("metric").EnumerateObject().Select(l => $"{l.Name}={l.Value.GetString()}")),
            double.Parse(r.GetProperty("value")[1].GetString()!, CultureInfo.InvariantCulture)))];
    }

    /// <summary>Each panel as a small chart of its range queries over the load (a table panel as text), in one SVG.</summary>
    private static async Task<string> RenderAsync(List<Panel> panels, PrometheusServer classic, PrometheusServer native, DateTimeOffset from, DateTimeOffset to)
    {
        string[] colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f", "#e377c2"];
        const int W = 360, H = 200, Columns = 3;
        int rows = (panels.Count + Columns - 1) / Columns;
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W * Columns}\" height=\"{(H * rows) + 30}\" font-family=\"sans-serif\" font-size=\"10\">");
        svg.Append(CultureInfo.InvariantCulture, $"<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/><text x=\"8\" y=\"18\" font-size=\"13\">docs/grafana/percpu-aspnetcore.json: the panels' queries on Prometheus 2.42 scraping the sample, 12 s mixed load, {from:yyyy-MM-dd HH:mm} UTC</text>");
        for (int i = 0; i < panels.Count; i++)
        {
            Panel panel = panels[i];
            double x0 = (i % Columns * W) + 40, y0 = (i / Columns * H) + 50, w = W - 60, h = H - 75;
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x0 - 32}\" y=\"{y0 - 8}\" font-size=\"11\" font-weight=\"bold\">{Xml(panel.Title)} ({Xml(panel.Unit)})</text>");
            HttpClient api = panel.Native ? native.Api : classic.Api;
            var series = new List<(string Name, List<(double T, double V)> Points)>();
            foreach (Target target in panel.Targets)
            {
                series.AddRange(await RangeAsync(api, target, from, to));
            }

            if (panel.Type == "table")
            {
                int line = 0;
                foreach ((string name, _) in series)
                {
                    svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x0 - 32}\" y=\"{y0 + 20 + (14 * line++)}\">{Xml(name)}</text>");
                }

                continue;
            }

            double tMin = from.ToUnixTimeSeconds(), tMax = Math.Max(tMin + 1, to.ToUnixTimeSeconds());
            double vMax = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.V)).Select(p => p.V).DefaultIfEmpty(1).Max();
            vMax = vMax <= 0 ? 1 : vMax * 1.1;
            svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{x0}\" y=\"{y0}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#cccccc\"/>");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x0 - 4}\" y=\"{y0 + 8}\" text-anchor=\"end\">{vMax.ToString("G3", CultureInfo.InvariantCulture)}</text><text x=\"{x0 - 4}\" y=\"{y0 + h}\" text-anchor=\"end\">0</text>");
            for (int s = 0; s < series.Count && s < colors.Length; s++)
            {
                string points = string.Join(" ", series[s].Points.Where(p => double.IsFinite(p.V)).Select(p =>
                    FormattableString.Invariant($"{x0 + ((p.T - tMin) / (tMax - tMin) * w):0.#},{y0 + h - (p.V / vMax * h):0.#}")));
                svg.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{colors[s]}\" stroke-width=\"1.5\" points=\"{points}\"/>");
                svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x0 + ((s % 2) * (w / 2))}\" y=\"{y0 + h + 12 + (s / 2 * 11)}\" fill=\"{colors[s]}\">{Xml(series[s].Name.Length > 34 ? series[s].Name[..33] + "…" : series[s].Name)}</text>");
            }
        }

        return svg.Append("</svg>\n").ToString();
    }

    private static async Task<List<(string Name, List<(double T, double V)> Points)>> RangeAsync(HttpClient api, Target target, DateTimeOffset from, DateTimeOffset to)
    {
        // A 5 s rate window for the picture (Prometheus scrapes every second), so the 12 s load shows as a plateau.
        string expr = target.Expr.Replace("[30s]", "[5s]", StringComparison.Ordinal);
        string query = FormattableString.Invariant($"/api/v1/query_range?query={Uri.EscapeDataString(expr)}&start={from.ToUnixTimeSeconds()}&end={to.ToUnixTimeSeconds()}&step=1");
        string? body = await PrometheusEndToEndTests.TryGet(api, query);
        var result = new List<(string, List<(double, double)>)>();
        if (body is null)
        {
            return result;
        }

        using JsonDocument doc = JsonDocument.Parse(body);
        foreach (JsonElement r in doc.RootElement.GetProperty("data").GetProperty("result").EnumerateArray())
        {
            string name = target.Legend;
            foreach (JsonProperty label in r.GetProperty("metric").EnumerateObject())
            {
                name = name.Replace("{{" + label.Name + "}}", label.Value.GetString(), StringComparison.Ordinal);
            }

            result.Add((name, [.. r.GetProperty("values").EnumerateArray().Select(v => (v[0].GetDouble(), double.Parse(v[1].GetString()!, CultureInfo.InvariantCulture)))]));
        }

        return result;
    }

    private static string Xml(string s) => s.Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal).Replace(">", "&gt;", StringComparison.Ordinal);
}
