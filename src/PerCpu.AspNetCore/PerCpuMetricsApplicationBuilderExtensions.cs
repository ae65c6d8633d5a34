using Microsoft.Extensions.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using PerCpu.AspNetCore;
using PerCpu.AspNetCore.Internal;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Adds the PerCpu request-metrics middleware and the scrape endpoint.</summary>
public static class PerCpuMetricsApplicationBuilderExtensions
{
    /// <summary>
    /// Records every request that passes this point, once, with the route, status and <c>error.type</c> that ASP.NET
    /// Core's own <c>http.server.request.duration</c> gives it. Call it early: requests short-circuited before it are not
    /// seen. It may stand before or after <c>UseExceptionHandler</c>, <c>UseStatusCodePages*</c> and <c>UseRouting</c>.
    /// </summary>
    /// <param name="app">The application.</param>
    /// <returns>The application, for chaining.</returns>
    /// <exception cref="InvalidOperationException"><c>AddPerCpuMetrics</c> was not called.</exception>
    public static IApplicationBuilder UsePerCpuMetrics(this IApplicationBuilder app)
    {
        ArgumentNullException.ThrowIfNull(app);
        if (app.ApplicationServices.GetService<HttpMetricsStore>() is null)
        {
            throw new InvalidOperationException("PerCpu metrics are not registered: call builder.Services.AddPerCpuMetrics() before app.UsePerCpuMetrics().");
        }

        // Measurements made from here on (before app.Run(), say) are seen even on meters created without IMeterFactory.
        PerCpuMetricsServiceCollectionExtensions.StartListener(app.ApplicationServices);
        return app.UseMiddleware<PerCpuMetricsMiddleware>();
    }

    /// <summary>
    /// Maps the scrape endpoint (GET and HEAD): Prometheus text format 0.0.4, or OpenMetrics 1.0.0 when the <c>Accept</c>
    /// header asks for <c>application/openmetrics-text</c>. Concurrent scrapes share one rendering. Returns the convention builder, so the endpoint can be secured with the
    /// standard conventions (<c>.RequireHost("*:9090")</c>, <c>.RequireAuthorization(...)</c>).
    /// </summary>
    /// <param name="endpoints">The route builder.</param>
    /// <param name="pattern">The route pattern. Default <c>/metrics</c>.</param>
    /// <returns>The endpoint's convention builder.</returns>
    /// <exception cref="ArgumentException"><paramref name="pattern"/> is not a valid route pattern.</exception>
    public static IEndpointConventionBuilder MapPerCpuMetrics(this IEndpointRouteBuilder endpoints, string pattern = "/metrics")
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        if (string.IsNullOrWhiteSpace(pattern) || !pattern.StartsWith('/'))
        {
            throw new ArgumentException($"MapPerCpuMetrics pattern '{pattern}' is invalid: give a route starting with '/', such as \"/metrics\".", nameof(pattern));
        }

        try
        {
            _ = Microsoft.AspNetCore.Routing.Patterns.RoutePatternFactory.Parse(pattern);
        }
        catch (Microsoft.AspNetCore.Routing.Patterns.RoutePatternException ex)
        {
            throw new ArgumentException($"MapPerCpuMetrics pattern '{pattern}' is not a valid route pattern: {ex.Message}", nameof(pattern), ex);
        }

        HttpMetricsStore store = endpoints.ServiceProvider.GetService<HttpMetricsStore>()
            ?? throw new InvalidOperationException("PerCpu metrics are not registered: call builder.Services.AddPerCpuMetrics() before app.MapPerCpuMetrics().");

        // A plain RequestDelegate: no reflection over a handler's parameters, so the endpoint is trimming- and AOT-safe.
        ScrapeEndpoint scrape = endpoints.ServiceProvider.GetRequiredService<ScrapeEndpoint>();
        IEndpointConventionBuilder builder = endpoints.MapMethods(pattern, [HttpMethods.Get, HttpMethods.Head], scrape.HandleAsync).WithDisplayName("PerCpu metrics scrape");

        builder.WithMetadata(ScrapeEndpoint.Marker);
        if (store.Options.ExcludeScrapeEndpoint)
        {
            builder.WithMetadata(new ExcludeFromPerCpuMetricsAttribute());
        }

        // Another exporter's endpoint at the same path (the OpenTelemetry Prometheus exporter's MapPrometheusScrapingEndpoint
        // defaults to /metrics too) would be shadowed by this one without a word: say so once the app has started.
        IServiceProvider services = endpoints.ServiceProvider;
        ICollection<EndpointDataSource> sources = endpoints.DataSources;
        services.GetService<IHostApplicationLifetime>()?.ApplicationStarted.Register(() => ScrapeEndpoint.WarnAboutOtherEndpointsAt(pattern, sources, services));
        return builder;
    }

    /// <summary>Leaves the endpoints of <paramref name="builder"/> out of PerCpu's request metrics.</summary>
    /// <typeparam name="TBuilder">The convention builder type.</typeparam>
    /// <param name="builder">The endpoint convention builder.</param>
    /// <returns>The builder, for chaining.</returns>
    public static TBuilder ExcludeFromPerCpuMetrics<TBuilder>(this TBuilder builder)
        where TBuilder : IEndpointConventionBuilder
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Add(b => b.Metadata.Add(new ExcludeFromPerCpuMetricsAttribute()));
        return builder;
    }
}
