using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using PerCpu.AspNetCore;
using PerCpu.AspNetCore.Internal;
using PerCpu.AspNetCore.Otlp;
using PerCpu.Families;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers PerCpu request metrics.</summary>
public static class PerCpuMetricsServiceCollectionExtensions
{
    // Hosting's request metrics are PerCpu's own (recorded per CPU by the middleware); PerCpu's meter bridge re-publishes
    // what the scrape already shows.
    private static readonly string[] NeverListened = ["Microsoft.AspNetCore.Hosting", MeterBridge.MeterName];

    // LoggerMessage.Define, as in ScrapeEndpoint: an instrument of a listened meter that PerCpu cannot collect, or an
    // observable callback past its budget.
    private static readonly Action<Microsoft.Extensions.Logging.ILogger, string, Exception?> s_notCollected = Microsoft.Extensions.Logging.LoggerMessage.Define<string>(
        Microsoft.Extensions.Logging.LogLevel.Warning, new Microsoft.Extensions.Logging.EventId(4, "MeterListenerWarning"), "{Problem}");

    /// <summary>
    /// Adds PerCpu request metrics: the per-CPU store, the <see cref="MetricRegistry"/> for the app's own labelled families,
    /// the listener that aggregates the Meter API instruments of <see cref="PerCpuMetricsOptions.Meters"/> per CPU, the
    /// <c>PerCpu.AspNetCore</c> meter, and the once-a-second rate sampler. Options are validated when the host starts; an invalid value fails startup with a message naming it.
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
        services.TryAddSingleton(sp =>
        {
            PerCpuMetricsOptions o = sp.GetRequiredService<IOptions<PerCpuMetricsOptions>>().Value;
            return new MetricRegistry(o.MaxSeriesPerMetric, o.MaxLabelValueLength);
        });
        services.TryAddSingleton(sp =>
        {
            PerCpuMetricsOptions o = sp.GetRequiredService<IOptions<PerCpuMetricsOptions>>().Value;
            double[]? boundaries = o.HistogramBoundaries is null ? null : [.. o.HistogramBoundaries];
            Microsoft.Extensions.Logging.ILogger? log = sp.GetService<Microsoft.Extensions.Logging.ILoggerFactory>()?.CreateLogger("PerCpu.Metrics");
            HostMeterFactory host = sp.GetRequiredService<HostMeterFactory>();
            var listener = new PerCpuMeterListener(o.Meters, NeverListened, o.MaxSeriesPerMetric, (unit, advice) => MetricRegistry.LayoutFor(unit, advice ?? boundaries),
                log is null ? null : message => s_notCollected(log, message, null), o.MaxLabelValueLength, o.ObservableCallbackBudget, () => host.Factory);
            sp.GetRequiredService<MetricRegistry>().AddProducer(listener);
            return listener;
        });
        services.TryAddSingleton<HostMeterFactory>();
        ListenFromTheFirstMeter(services);
        services.TryAddSingleton<MeterBridge>();
        services.TryAddSingleton<ScrapeEndpoint>();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, RatesHostedService>());
        return services;
    }

    /// <summary>
    /// Starts the listener when the app first resolves <see cref="System.Diagnostics.Metrics.IMeterFactory"/> (a service
    /// that creates its meter in its constructor, a hosted service, <c>app.Services.GetRequiredService&lt;Shop&gt;()</c>
    /// after <c>builder.Build()</c>), not only when the host starts: a measurement on a meter is only seen by a listener
    /// that exists when it is made. The registered factory is kept; only its resolution is wrapped, once.
    /// </summary>
    private static void ListenFromTheFirstMeter(IServiceCollection services)
    {
        if (services.Any(d => d.ServiceType == typeof(ListeningMeterFactoryMark)))
        {
            return;
        }

        ServiceDescriptor? original = services.LastOrDefault(d => d.ServiceType == typeof(System.Diagnostics.Metrics.IMeterFactory) && !d.IsKeyedService);
        if (original is null)
        {
            return;
        }

        services.AddSingleton<ListeningMeterFactoryMark>();
        services.Replace(ServiceDescriptor.Singleton<System.Diagnostics.Metrics.IMeterFactory>(sp =>
        {
            System.Diagnostics.Metrics.IMeterFactory created = original switch
            {
                { ImplementationInstance: System.Diagnostics.Metrics.IMeterFactory instance } => instance,
                { ImplementationFactory: { } factory } => (System.Diagnostics.Metrics.IMeterFactory)factory(sp),
                _ => (System.Diagnostics.Metrics.IMeterFactory)ActivatorUtilities.CreateInstance(sp, original.ImplementationType!),
            };

            // Known before the listener starts and before the factory makes its first meter: the listener collects this
            // host's meters, not another host's in the same process.
            sp.GetRequiredService<HostMeterFactory>().Factory = created;
            StartListener(sp);
            return created;
        }));
    }

    /// <summary>Creates the listener now, unless the options are invalid: then the host's start reports them.</summary>
    internal static void StartListener(IServiceProvider services)
    {
        try
        {
            services.GetService<PerCpuMeterListener>();
        }
        catch (OptionsValidationException)
        {
            // ValidateOnStart fails the host's start with the message that names the option.
        }
    }

    private sealed class ListeningMeterFactoryMark;

    /// <summary>This host's <see cref="System.Diagnostics.Metrics.IMeterFactory"/>, once created: the listener's local scope.</summary>
    internal sealed class HostMeterFactory
    {
        private volatile System.Diagnostics.Metrics.IMeterFactory? _factory;

        public System.Diagnostics.Metrics.IMeterFactory? Factory
        {
            get => _factory;
            set => _factory = value;
        }
    }

    /// <summary>
    /// Adds PerCpu's own OTLP/HTTP metrics exporter: real OTLP <c>Histogram</c> (or <c>ExponentialHistogram</c>), <c>Sum</c>
    /// and <c>Gauge</c> points straight from the per-CPU store, every <see cref="PerCpuOtlpExporterOptions.ExportInterval"/>,
    /// from a hosted service. Configured by the standard <c>OTEL_*</c> variables, then by <paramref name="configure"/>.
    /// Calls <see cref="AddPerCpuMetrics"/> if needed.
    /// </summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Changes to the options taken from the environment.</param>
    /// <returns>The services, for chaining.</returns>
    public static IServiceCollection AddPerCpuOtlpExporter(this IServiceCollection services, Action<PerCpuOtlpExporterOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddPerCpuMetrics();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IConfigureOptions<PerCpuOtlpExporterOptions>, OtlpOptionsSetup>());
        OptionsBuilder<PerCpuOtlpExporterOptions> options = services.AddOptions<PerCpuOtlpExporterOptions>().ValidateOnStart();
        if (configure is not null)
        {
            options.Configure(configure);
        }

        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<PerCpuOtlpExporterOptions>, OtlpOptionsValidator>());
        if (!services.Any(d => d.ServiceType == typeof(OtlpExporterService)))
        {
            services.AddSingleton<OtlpExporterService>();
            services.AddHostedService(sp => sp.GetRequiredService<OtlpExporterService>());
        }

        return services;
    }
}
