using System.Net;
using Microsoft.AspNetCore.Mvc.Testing;

namespace PerCpu.AspNetCore.Tests;

/// <summary>The sample service, through WebApplicationFactory: every kind of route is counted exactly.</summary>
public sealed class SampleTests(WebApplicationFactory<Program> factory) : IClassFixture<WebApplicationFactory<Program>>
{
    [Fact]
    public async Task Sample_ConcurrentRequestsOverEveryRoute_ScrapeExactPerSeries()
    {
        using HttpClient client = factory.CreateClient();
        CancellationToken ct = TestContext.Current.CancellationToken;
        (string Path, string Key, HttpStatusCode Status)[] routes =
        [
            ("/items/7", "/items/{id:int} GET 200", HttpStatusCode.OK),
            ("/missing/x", "/missing/{id} GET 404", HttpStatusCode.NotFound),
            ("/slow?ms=5", "/slow GET 200", HttpStatusCode.OK),
            ("/error", "/error GET 500 System.InvalidOperationException", HttpStatusCode.InternalServerError),
            ("/healthz", "", HttpStatusCode.OK),
            ("/no/such/route", "unhandled GET 404", HttpStatusCode.NotFound),
        ];
        const int N = 1_200;

        await Parallel.ForAsync(0, N, new ParallelOptions { MaxDegreeOfParallelism = 32, CancellationToken = ct }, async (i, token) =>
        {
            (string path, _, HttpStatusCode status) = routes[i % routes.Length];
            using HttpResponseMessage r = await client.GetAsync(path, token);
            Assert.Equal(status, r.StatusCode);
        });
        using HttpResponseMessage created = await client.PostAsync("/items", new StringContent("""{"id":3,"name":"x"}""", System.Text.Encoding.UTF8, "application/json"), ct);
        using HttpResponseMessage bad = await client.PostAsync("/items", new StringContent("""{"id":-1,"name":"x"}""", System.Text.Encoding.UTF8, "application/json"), ct);

        Scrape scrape = Scrape.Parse(await client.GetStringAsync("/metrics", ct));
        Dictionary<string, double> counts = scrape.CountsByRouteMethodStatus();

        foreach ((_, string key, _) in routes.Where(r => r.Key.Length > 0))
        {
            Assert.Equal(N / routes.Length, counts[key]);
        }

        Assert.Equal(1, counts["/items POST 201"]);
        Assert.Equal(1, counts["/items POST 400"]);
        Assert.DoesNotContain(counts.Keys, k => k.StartsWith("/healthz", StringComparison.Ordinal) || k.StartsWith("/metrics", StringComparison.Ordinal));
        Assert.Equal(7, counts.Count);
    }
}
