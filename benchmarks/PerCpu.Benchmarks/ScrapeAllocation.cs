using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using PerCpu.AspNetCore.Internal;
using PerCpu.Families;

namespace PerCpu.Benchmarks;

/// <summary>
/// <c>scrapealloc [--series 1000,10000,100000] [--rounds 7]</c>: bytes allocated by one scrape of the Meter API's series
/// (a counter with N series over two tags, a histogram with N/100) in each format, measured with
/// <see cref="GC.GetAllocatedBytesForCurrentThread"/> around the rendering (which runs on one thread) into a reused
/// pooled chunk writer, after warm-up scrapes; median and max of the rounds, and the time of the rendering. The point is
/// how allocation grows with N, not the absolute time.
/// </summary>
internal static class ScrapeAllocation
{
    public static int Run(string[] args)
    {
        int[] sizes = [1_000, 10_000, 100_000];
        int rounds = 7;
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            switch (args[i])
            {
                case "--series":
                    sizes = [.. args[i + 1].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture))];
                    break;
                case "--rounds":
                    rounds = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
                    break;
            }
        }

        Console.WriteLine($"# scrapealloc: {Environment.ProcessorCount} CPUs, {ProcessorId.Strategy}, .NET {Environment.Version}");
        Console.WriteLine("series,format,bytes_median,bytes_max,ms_median,scrape_bytes");
        foreach (int n in sizes)
        {
            using var meter = new Meter("Scale");
            ServiceProvider services = new ServiceCollection().AddPerCpuMetrics(o =>
            {
                o.Meters.Clear();
                o.Meters.Add("Scale");
                o.MaxSeriesPerMetric = n;
            }).BuildServiceProvider();
            HttpMetricsStore store = services.GetRequiredService<HttpMetricsStore>();
            MetricRegistry registry = services.GetRequiredService<MetricRegistry>();
            _ = services.GetRequiredService<PerCpuMeterListener>(); // listens from here on
            Counter<long> counter = meter.CreateCounter<long>("scale.requests", "{request}");
            Histogram<double> histogram = meter.CreateHistogram<double>("scale.duration", "s");
            string[] routes = [.. Enumerable.Range(0, n / 10).Select(r => $"/api/v1/resource{r}/{{id}}")];
            string[] codes = [.. Enumerable.Range(0, 10).Select(c => (200 + c).ToString(CultureInfo.InvariantCulture))];
            for (int i = 0; i < n; i++)
            {
                counter.Add(1, new KeyValuePair<string, object?>("route", routes[i / 10]), new KeyValuePair<string, object?>("code", codes[i % 10]));
                if (i % 100 == 0)
                {
                    histogram.Record(0.001 * (i % 1000), new KeyValuePair<string, object?>("route", routes[i / 10]));
                }
            }

            foreach (ScrapeFormat format in new[] { ScrapeFormat.Text, ScrapeFormat.OpenMetrics, ScrapeFormat.Protobuf })
            {
                long size = 0;
                for (int w = 0; w < 3; w++)
                {
                    size = Scrape(store, registry, format).Bytes; // label texts built, pools warm
                }

                var bytes = new List<long>();
                var times = new List<double>();
                for (int r = 0; r < rounds; r++)
                {
                    (long allocated, double ms, _) = Scrape(store, registry, format);
                    bytes.Add(allocated);
                    times.Add(ms);
                }

                bytes.Sort();
                times.Sort();
                Console.WriteLine(FormattableString.Invariant($"{n},{format},{bytes[bytes.Count / 2]},{bytes[^1]},{times[times.Count / 2]:0.00},{size}"));
            }

            services.Dispose();
        }

        return 0;
    }

    private static (long Allocated, double Ms, long Bytes) Scrape(HttpMetricsStore store, MetricRegistry registry, ScrapeFormat format)
    {
        var output = new ChunkWriter();
        long before = GC.GetAllocatedBytesForCurrentThread();
        long start = Stopwatch.GetTimestamp();
        Exposition.Write(output, store, registry, format);
        double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        long bytes = 0;
        foreach ((byte[] chunk, int length) in output.Complete())
        {
            bytes += length;
            if (chunk.Length == ChunkWriter.ChunkSize)
            {
                ChunkWriter.Pool.Return(chunk);
            }
        }

        return (allocated, ms, bytes);
    }
}
