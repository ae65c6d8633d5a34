using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using PerCpu.AspNetCore;
using PerCpu.AspNetCore.Internal;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers PerCpu request metrics.</summary>
public static class PerCpuMetricsServiceCollectionExtensions
{
    /// <summary>
    /// Adds PerCpu request metrics: the per-CPU store, the <c>PerCpu.AspNetCore</c> meter, and the once-a-second rate
    /// sampler. Options are validated when the host starts; an invalid value fails startup with a message naming it.
    /// Then call <c>app.UsePerCpuMetrics()</c> and <c>app.MapPerCpuMetrics()</c>.
    /// </summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Changes to the defaults of <see cref="PerCpuMetricsOptions"/>.</param>
    /// <returns>The services, for chaining.</returns>
    public static IServiceCollection AddPerCpuMetrics(this IServiceCollection services, Action<PerCpuMetricsOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        OptionsBuilder<PerCpuMetricsOptions> options = services.AddOptions<PerCpuMetricsOptions>().ValidateOnStart();
        if (configure is not null)
        {
            options.Configure(configure);
        }

        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<PerCpuMetricsOptions>, PerCpuMetricsOptionsValidator>());
        services.TryAddSingleton(TimeProvider.System);
        services.AddMetrics();
        services.TryAddSingleton<HttpMetricsStore>();
        services.TryAddSingleton<MeterBridge>();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, RatesHostedService>());
        return services;
    }
}
