using System.Net;
using System.Net.Http.Json;
using Microsoft.AspNetCore.Mvc.Testing;

namespace PerCpu.AspNetCore.Tests;

public sealed class SampleTests(WebApplicationFactory<Program> factory) : IClassFixture<WebApplicationFactory<Program>>
{
    [Fact]
    public async Task Sample_ConcurrentRequests_CountedExactly()
    {
        using HttpClient client = factory.CreateClient();
        long before = (await client.GetFromJsonAsync<Stats>("/stats", TestContext.Current.CancellationToken))!.Requests;

        const int N = 2_000;
        await Parallel.ForAsync(0, N, new ParallelOptions { MaxDegreeOfParallelism = 64, CancellationToken = TestContext.Current.CancellationToken }, async (i, ct) =>
        {
            using HttpResponseMessage r = await client.GetAsync(i % 2 == 0 ? $"/items/{i}" : "/", ct);
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        });

        Stats after = (await client.GetFromJsonAsync<Stats>("/stats", TestContext.Current.CancellationToken))!;
        // The first /stats request itself is counted after it read the counter; the second one is in flight.
        Assert.Equal(before + 1 + N, after.Requests);
        Assert.Equal(1, after.Active);
        Assert.False(string.IsNullOrEmpty(after.Strategy));
    }

    private sealed record Stats(long Requests, long Active, string Strategy, string Reason, int Slots);
}
