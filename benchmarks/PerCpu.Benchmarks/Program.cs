using BenchmarkDotNet.Running;
using PerCpu.Benchmarks;

// dotnet run -c Release --project benchmarks/PerCpu.Benchmarks -- contention [options]   multi-threaded harness
// dotnet run -c Release --project benchmarks/PerCpu.Benchmarks -- [BenchmarkDotNet args]   single-thread costs
if (args.Length > 0 && args[0] == "contention")
{
    return Contention.Run(args[1..]);
}

BenchmarkSwitcher.FromAssembly(typeof(Contention).Assembly).Run(args);
return 0;
