using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using PerCpu.AspNetCore.Internal;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// Custom request tags (<see cref="IHttpMetricsTagsFeature.Tags"/>) as labels of PerCpu's request metric: exact per
/// tag set under many more concurrent requests than cores, bounded by the series cap, and with or without ASP.NET
/// Core's hosting layer providing the feature.
/// </summary>
public sealed class CustomTagsTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static void TenantRoutes(WebApplication app)
    {
        app.MapGet("/tenant/{name}", (string name, HttpContext context) =>
        {
            IHttpMetricsTagsFeature tags = context.Features.Get<IHttpMetricsTagsFeature>()!;
            tags.Tags.Add(new("tenant", name));
            tags.Tags.Add(new("error.type", "not PerCpu's to take")); // a key PerCpu sets itself: left to PerCpu
            return name;
        });
        app.MapGet("/tenant-async/{name}", async (string name, HttpContext context) =>
        {
            await Task.Yield(); // completes on another thread: the lent feature goes back to that thread's pool
            context.Features.Get<IHttpMetricsTagsFeature>()!.Tags.Add(new("tenant", name));
            return name;
        });
        app.MapGet("/bad-tag", (HttpContext context) =>
        {
            context.Features.Get<IHttpMetricsTagsFeature>()!.Tags.Add(new("tenant", new Throws()));
            return "x";
        });
        app.MapGet("/disabled", (HttpContext context) =>
        {
            context.Features.Get<IHttpMetricsTagsFeature>()!.MetricsDisabled = true;
            return "x";
        });
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task TenantTags_ManyMoreRequestsThanCores_ExactPerTenant(bool hostingMeterListened)
    {
        await using TestApp app = await TestApp.StartAsync(routes: TenantRoutes);

        // With a listener on ASP.NET Core's hosting meter, the hosting layer provides the feature; without one, PerCpu does.
        using MetricCollector<double>? hosting = hostingMeterListened
            ? new MetricCollector<double>(app.App.Services.GetRequiredService<IMeterFactory>(), "Microsoft.AspNetCore.Hosting", "http.server.request.duration")
            : null;
        string[] tenants = ["acme", "globex", "initech", "umbrella"];
        const int N = 4000;
        await Parallel.ForAsync(0, N, new ParallelOptions { MaxDegreeOfParallelism = 64, CancellationToken = Ct }, async (i, ct) =>
        {
            string path = (i % 2 == 0 ? "/tenant/" : "/tenant-async/") + tenants[(i / 2) % tenants.Length];
            using HttpResponseMessage r = await app.Client.GetAsync(path, ct);
            r.EnsureSuccessStatusCode();
        });
        for (int i = 0; i < 10; i++)
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/disabled", Ct);
        }

        Scrape scrape = await app.ScrapeWhenRecordedAsync(N);

        var counts = scrape.Named("http_server_request_duration_seconds_count").ToList();
        foreach (string tenant in tenants)
        {
            Assert.Equal(N / tenants.Length / 2, counts.Single(s => s.Labels.GetValueOrDefault("tenant") == tenant && s.Labels["http_route"] == "/tenant/{name}").Value);
            Assert.Equal(N / tenants.Length / 2, counts.Single(s => s.Labels.GetValueOrDefault("tenant") == tenant && s.Labels["http_route"] == "/tenant-async/{name}").Value);
        }

        Assert.Equal(N, counts.Sum(s => s.Value)); // only tagged series: none without the tag, and /disabled is not there
        Assert.DoesNotContain(counts, s => s.Labels.ContainsKey("error_type")); // a 200: PerCpu's error.type, not the app's
        Assert.DoesNotContain(counts, s => s.Labels.GetValueOrDefault("http_route") == "/disabled");
        await ExpositionTests.AssertPromtoolAccepts(scrape.Text, lintAllowed: true);
        Assert.Equal(0, app.App.Services.GetRequiredService<HttpMetricsStore>().RecordingFailures);
    }

    [Fact]
    public async Task TenantTags_PastTheSeriesCap_GoToTheOverflowSeries_NothingLost()
    {
        const int Cap = 20;
        await using TestApp app = await TestApp.StartAsync(o => o.MaxSeriesPerMetric = Cap, routes: TenantRoutes);
        const int Tenants = 200;
        await Parallel.ForAsync(0, Tenants * 5, new ParallelOptions { MaxDegreeOfParallelism = 32, CancellationToken = Ct }, async (i, ct) =>
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/tenant/t" + (i % Tenants).ToString(System.Globalization.CultureInfo.InvariantCulture), ct);
        });

        Scrape scrape = await app.ScrapeWhenRecordedAsync(Tenants * 5);

        var counts = scrape.Named("http_server_request_duration_seconds_count").ToList();
        Assert.Equal(Tenants * 5, counts.Sum(s => s.Value));
        Assert.InRange(counts.Count(s => s.Labels.ContainsKey("tenant")), 1, Cap - 1); // one of the cap is the untagged series
        Assert.True(counts.Single(s => s.Labels.ContainsKey("otel_metric_overflow")).Value > 0);
        Assert.Equal(Cap, scrape.Named("percpu_series").Single().Value);
        Assert.True(scrape.Named("percpu_series_overflow_records_total").Single().Value > 0);
    }

    [Fact]
    public async Task ProvideMetricsTagsFeatureOff_NoFeatureWithoutAHostingListener_TagsCountWithOne()
    {
        await using TestApp app = await TestApp.StartAsync(o => o.ProvideMetricsTagsFeature = false, routes: a =>
            a.MapGet("/feature", (HttpContext c) => c.Features.Get<IHttpMetricsTagsFeature>() is null ? "none" : "present"));
        Assert.Equal("none", await app.Client.GetStringAsync("/feature", Ct)); // PerCpu set none

        // With a listener on the hosting meter, the hosting layer's own feature carries the tags to PerCpu.
        using var hosting = new MetricCollector<double>(app.App.Services.GetRequiredService<IMeterFactory>(), "Microsoft.AspNetCore.Hosting", "http.server.request.duration");
        Assert.Equal("present", await app.Client.GetStringAsync("/feature", Ct));
    }

    [Fact]
    public async Task ATagWhoseToStringThrows_RequestRecordedWithoutIt_FailureCounted()
    {
        await using TestApp app = await TestApp.StartAsync(routes: TenantRoutes);
        for (int i = 0; i < 3; i++)
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/bad-tag", Ct);
            Assert.Equal(System.Net.HttpStatusCode.OK, r.StatusCode);
        }

        Scrape scrape = await app.ScrapeAsync();
        Assert.Equal(3, scrape.Named("http_server_request_duration_seconds_count").Single(s => s.Labels["http_route"] == "/bad-tag").Value);
        Assert.Equal(3, scrape.Named("percpu_recording_failures_total").Single().Value);
    }

    [Fact]
    public async Task ALongTagValue_IsCutAndCounted()
    {
        await using TestApp app = await TestApp.StartAsync(o => o.MaxLabelValueLength = 16, routes: TenantRoutes);
        using HttpResponseMessage r = await app.Client.GetAsync("/tenant/" + new string('x', 100), Ct);

        Scrape scrape = await app.ScrapeAsync();
        string tenant = scrape.Named("http_server_request_duration_seconds_count").Single(s => s.Labels.ContainsKey("tenant")).Labels["tenant"];
        Assert.Equal(new string('x', 15) + "\u2026", tenant);
        Assert.Equal(1, app.App.Services.GetRequiredService<HttpMetricsStore>().TruncatedLabelValues);
        Assert.True(scrape.Named("percpu_label_values_truncated_total").Single().Value >= 1); // with the Meter API's own cuts
    }

    private sealed class Throws
    {
        public override string ToString() => throw new InvalidOperationException("a tag value that cannot be rendered");
    }
}
