using Microsoft.Extensions.Hosting;

namespace PerCpu.AspNetCore.Internal;

/// <summary>Starts the once-a-second rate sampler with the host and stops it with the host.</summary>
internal sealed class RatesHostedService(HttpMetricsStore store, MeterBridge bridge, PerCpu.Families.PerCpuMeterListener listener) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        GC.KeepAlive(bridge); // created with the host, so a MeterListener sees the instruments from the start
        GC.KeepAlive(listener); // listening from startup: measurements made from here on are aggregated
        store.Rates.Start();
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        store.Rates.Dispose();
        return Task.CompletedTask;
    }
}
