using System.Globalization;
using System.Text;

namespace PerCpu.Benchmarks;

/// <summary>
/// Turns the committed benchmark CSVs (benchmarks/results) into SVG charts under docs/: throughput against threads
/// for counters and histograms (medians of rounds), and end-to-end RPS and p99 per variant. Plain SVG written here,
/// so the plots need no native graphics library.
/// </summary>
internal static class Plots
{
    private static readonly string[] s_colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f"];

    public static int Run(string[] args)
    {
        string results = args.Length > 0 ? args[0] : "benchmarks/results";
        string docs = args.Length > 1 ? args[1] : "docs";
        Directory.CreateDirectory(docs);
        string counters = Latest(results, "contention-counters.csv");
        string histograms = Latest(results, "contention-histograms.csv");
        string endToEnd = Latest(results, "endtoend.csv");

        Write(Path.Combine(docs, "counters-throughput.svg"), LineChart(
            "Counter increments, all threads together (Mops/s, median of 5 rounds)", Medians(counters),
            ["PerCpuCounter.Increment (auto)", "Interlocked.Increment, one shared long", "OTel SDK Counter<long>.Add, 0 tags", "OTel SDK Counter<long>.Add, 3 tags", "prometheus-net Counter.Inc, 3 labels"]));
        Write(Path.Combine(docs, "histograms-throughput.svg"), LineChart(
            "Histogram records, all threads together (Mops/s, median of 5 rounds)", Medians(histograms),
            ["PerCpuHistogram.Record", "one shared histogram, interlocked buckets", "OTel SDK Histogram<double>.Record, 3 tags", "prometheus-net Histogram.Observe", "HdrHistogram LongConcurrentHistogram"]));
        if (File.Exists(endToEnd))
        {
            List<string[]> rows = [.. File.ReadLines(endToEnd).Skip(1).Select(l => l.Split(','))];
            const string Noise = "2 vCPUs shared with wrk; RPS varies ±50% between server processes (see benchmarks/README.md)";
            Write(Path.Combine(docs, "endtoend-rps.svg"), BarChart("End to end: requests per second (median of rounds)", Noise, rows, 3, "RPS"));
            Write(Path.Combine(docs, "endtoend-p99.svg"), BarChart("End to end: p99 latency, ms (median of rounds)", Noise, rows, 5, "ms"));
        }

        string hosting = Latest(results, "hosting.csv");
        if (File.Exists(hosting))
        {
            List<string[]> rows = [.. File.ReadLines(hosting).Skip(1).Select(l => l.Split(','))];
            string[] names = [.. rows.Select(r => r[2]).Distinct()];
            Write(Path.Combine(docs, "hosting-ns-per-request.svg"), BarChart(
                "In-process hosting pipeline: ns per request (BenchmarkDotNet median)", "no sockets: IHttpApplication driven directly; all-cores figure is wall time per request with 2 threads", rows, 3, "ns", names));
        }

        Console.WriteLine($"wrote SVG plots to {docs}/ from {results}/");
        return 0;
    }

    private static string Latest(string dir, string suffix) =>
        Directory.Exists(dir) ? Directory.GetFiles(dir, "*" + suffix).Order(StringComparer.Ordinal).LastOrDefault() ?? Path.Combine(dir, suffix) : Path.Combine(dir, suffix);

    /// <summary>(case, threads) → median Mops/s over rounds, from a contention CSV.</summary>
    private static Dictionary<(string Case, int Threads), double> Medians(string csv) =>
        File.ReadLines(csv).Skip(1)
            .Select(l => (Case: l[1..l.LastIndexOf('"')], Fields: l[(l.LastIndexOf('"') + 2)..].Split(',')))
            .GroupBy(r => (r.Case, int.Parse(r.Fields[0], CultureInfo.InvariantCulture)))
            .ToDictionary(g => g.Key, g => Statistics.Median([.. g.Select(r => double.Parse(r.Fields[2], CultureInfo.InvariantCulture))]));

    private static string LineChart(string title, Dictionary<(string Case, int Threads), double> data, string[] cases)
    {
        const int W = 760, H = 420, L = 70, R = 20, T = 40, B = 150;
        int[] threads = [.. data.Keys.Select(k => k.Threads).Distinct().Order()];
        double max = Nice(cases.SelectMany(c => threads.Select(t => data.GetValueOrDefault((c, t)))).Max() * 1.1);
        var svg = Begin(W, H, title);
        Axes(svg, L, T, W - R, H - B, max, "Mops/s");
        for (int i = 0; i < threads.Length; i++)
        {
            double x = L + ((W - L - R) * (i + 0.5) / threads.Length);
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x:0}\" y=\"{H - B + 18}\" text-anchor=\"middle\">{threads[i]} thread{(threads[i] == 1 ? "" : "s")}</text>\n");
        }

        for (int c = 0; c < cases.Length; c++)
        {
            var points = new List<string>();
            for (int i = 0; i < threads.Length; i++)
            {
                double x = L + ((W - L - R) * (i + 0.5) / threads.Length);
                double y = (H - B) - ((H - B - T) * data.GetValueOrDefault((cases[c], threads[i])) / max);
                points.Add(string.Create(CultureInfo.InvariantCulture, $"{x:0.#},{y:0.#}"));
                svg.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{x:0.#}\" cy=\"{y:0.#}\" r=\"3.5\" fill=\"{s_colors[c]}\"/>\n");
            }

            svg.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{s_colors[c]}\" stroke-width=\"2.5\" points=\"{string.Join(' ', points)}\"/>\n");
            Legend(svg, L, H - B + 40 + (c * 20), s_colors[c], cases[c]);
        }

        return End(svg);
    }

    private static string BarChart(string title, string subtitle, List<string[]> rows, int column, string unit, string[]? variantNames = null)
    {
        const int W = 760, H = 400, L = 70, R = 20, T = 40, B = 110;
        string[] shapes = [.. rows.Select(r => r[1]).Distinct()];
        string[] variants = variantNames ?? ["none", "percpu", "otel", "promnet"];
        var medians = variants.SelectMany(v => shapes.Select(s => (v, s, Statistics.Median([.. rows.Where(r => r[2] == v && r[1] == s).Select(r => double.Parse(r[column], CultureInfo.InvariantCulture))]))))
            .ToDictionary(x => (x.v, x.s), x => x.Item3);
        double max = Nice(medians.Values.Where(double.IsFinite).Max() * 1.15);
        var svg = Begin(W, H, title);
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{W / 2}\" y=\"{H - 20}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#555\">{Escape(subtitle)}</text>\n");
        Axes(svg, L, T, W - R, H - B, max, unit);
        double group = (W - L - R) / (double)shapes.Length;
        double bar = group / (variants.Length + 1);
        for (int s = 0; s < shapes.Length; s++)
        {
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{L + (group * (s + 0.5)):0}\" y=\"{H - B + 18}\" text-anchor=\"middle\">{shapes[s]}</text>\n");
            for (int v = 0; v < variants.Length; v++)
            {
                double value = medians[(variants[v], shapes[s])];
                double h = (H - B - T) * value / max;
                double x = L + (group * s) + (bar * (v + 0.5));
                svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{x:0.#}\" y=\"{H - B - h:0.#}\" width=\"{bar * 0.9:0.#}\" height=\"{h:0.#}\" fill=\"{s_colors[v]}\"/>\n");
                svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x + (bar * 0.45):0.#}\" y=\"{H - B - h - 4:0.#}\" text-anchor=\"middle\" font-size=\"11\">{(value >= 100 ? value.ToString("0", CultureInfo.InvariantCulture) : value.ToString("0.00", CultureInfo.InvariantCulture))}</text>\n");
            }
        }

        for (int v = 0; v < variants.Length; v++)
        {
            Legend(svg, L + (v * (W - L) / variants.Length), H - B + 45, s_colors[v], variants[v]);
        }

        return End(svg);
    }

    private static StringBuilder Begin(int w, int h, string title)
    {
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"13\">\n");
        svg.Append(CultureInfo.InvariantCulture, $"<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n<text x=\"{w / 2}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{Escape(title)}</text>\n");
        return svg;
    }

    private static void Axes(StringBuilder svg, int left, int top, int right, int bottom, double max, string unit)
    {
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"black\"/>\n");
        for (int i = 0; i <= 5; i++)
        {
            double value = max * i / 5;
            double y = bottom - ((bottom - top) * i / 5.0);
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" y1=\"{y:0.#}\" x2=\"{right}\" y2=\"{y:0.#}\" stroke=\"#ddd\"/><text x=\"{left - 6}\" y=\"{y + 4:0.#}\" text-anchor=\"end\" font-size=\"11\">{(max >= 50 ? value.ToString("0", CultureInfo.InvariantCulture) : value.ToString("0.0", CultureInfo.InvariantCulture))}</text>\n");
        }

        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"16\" y=\"{(top + bottom) / 2}\" transform=\"rotate(-90 16 {(top + bottom) / 2})\" text-anchor=\"middle\">{unit}</text>\n");
    }

    private static void Legend(StringBuilder svg, int x, int y, string color, string label) =>
        svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{x}\" y=\"{y - 10}\" width=\"14\" height=\"10\" fill=\"{color}\"/><text x=\"{x + 20}\" y=\"{y}\">{Escape(label)}</text>\n");

    private static string End(StringBuilder svg) => svg.Append("</svg>\n").ToString();

    private static void Write(string path, string content)
    {
        File.WriteAllText(path, content);
        Console.WriteLine("  " + path);
    }

    private static string Escape(string s) => s.Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal).Replace(">", "&gt;", StringComparison.Ordinal);

    /// <summary>Rounds an axis maximum up to 1, 2 or 5 times a power of ten, so the five ticks are round numbers.</summary>
    private static double Nice(double max)
    {
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(max)));
        foreach (double step in new[] { 1.0, 2.0, 5.0, 10.0 })
        {
            if (step * magnitude >= max)
            {
                return step * magnitude;
            }
        }

        return 10 * magnitude;
    }

}
