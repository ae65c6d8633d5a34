using BenchmarkDotNet.Running;
using PerCpu.Benchmarks;

// dotnet run -c Release --project benchmarks/PerCpu.Benchmarks -- contention [options]   multi-threaded harness
// dotnet run -c Release --project benchmarks/PerCpu.Benchmarks -- endtoend [options]     wrk against 4 variants (benchmarks/endtoend/run.sh)
// dotnet run -c Release --project benchmarks/PerCpu.Benchmarks -- scrapeburst [options]  50 parallel scrapes of 2000 series vs other requests' p99
// dotnet run -c Release --project benchmarks/PerCpu.Benchmarks -- scrapesoak [options]   30 slow readers + 200 scrapes of an 8.5 MB scrape: server RSS
// dotnet run -c Release --project benchmarks/PerCpu.Benchmarks -- scrapealloc [options]  bytes allocated per scrape of 1k-100k Meter API series, per format
// dotnet run -c Release --project benchmarks/PerCpu.Benchmarks -- hostingpaired [options] hosting-pipeline variants side by side in one process, paired per round
// dotnet run -c Release --project benchmarks/PerCpu.Benchmarks -- plots                   docs/*.svg from benchmarks/results/*.csv
// dotnet run -c Release --project benchmarks/PerCpu.Benchmarks -- [BenchmarkDotNet args]   single-thread costs
if (args.Length > 0 && args[0] == "contention")
{
    return Contention.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "endtoend")
{
    return EndToEnd.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "scrapeburst")
{
    return ScrapeBurst.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "scrapesoak")
{
    return ScrapeSoak.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "scrapealloc")
{
    return ScrapeAllocation.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "hostingpaired")
{
    return HostingPaired.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "plots")
{
    return Plots.Run(args[1..]);
}

BenchmarkSwitcher.FromAssembly(typeof(Contention).Assembly).Run(args);
return 0;
