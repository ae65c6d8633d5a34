using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using PerCpu.AspNetCore.Internal;
using PerCpu.Families;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// Readers that do not take their bytes cannot pin memory or scrape slots for long: scrapes beyond
/// <c>MaxConcurrentScrapes</c> get a quick 503 with <c>Retry-After</c>, and a reader slower than <c>ScrapeTimeout</c> is
/// cut off. Real sockets on loopback with a small receive buffer, never read, against a scrape of several megabytes.
/// </summary>
[Collection(HeapMeasurementCollection.Name)] // large scrapes: alone, beside no other test that loads the process
public sealed class SlowReaderTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task ScrapesBeyondTheCap_Get503WithRetryAfter_SlowReadersAreCutAtTheDeadline()
    {
        await using TestApp app = await TestApp.StartAsync(o =>
        {
            o.MaxSeriesPerMetric = 200_000;
            o.MaxConcurrentScrapes = 2;
            o.ScrapeTimeout = TimeSpan.FromSeconds(3);
        });
        Fill(app);

        HttpMetricsStore store = app.App.Services.GetRequiredService<HttpMetricsStore>();
        var uri = new Uri(app.Client.BaseAddress!, "/metrics");
        ScrapeEndpoint endpoint = app.App.Services.GetRequiredService<ScrapeEndpoint>();
        long renderings = endpoint.Renderings;
        using Socket first = await SlowReaderAsync(uri);
        Assert.True(SpinWait.SpinUntil(() => endpoint.InFlight == 1, TimeSpan.FromSeconds(10)));
        using Socket second = await SlowReaderAsync(uri);
        Assert.True(SpinWait.SpinUntil(() => endpoint.InFlight == 2, TimeSpan.FromSeconds(10)));
        Assert.Equal(renderings + 1, endpoint.Renderings); // the second shares the first's rendering: one copy of 12 MB

        // Both slow readers hold their scrape (their buffers full): a third scrape is refused at once.
        HttpResponseMessage? refused = null;
        for (int attempt = 0; attempt < 100 && refused is null; attempt++)
        {
            HttpResponseMessage r = await app.Client.GetAsync("/metrics", HttpCompletionOption.ResponseHeadersRead, Ct);
            if (r.StatusCode == System.Net.HttpStatusCode.ServiceUnavailable)
            {
                refused = r;
            }
            else
            {
                r.Dispose();
                await Task.Delay(20, Ct);
            }
        }

        Assert.True(refused is not null, $"no 503; cut {store.ScrapesCut}, refused {store.ScrapesRefused}");
        Assert.Equal("1", refused.Headers.RetryAfter?.ToString());
        refused.Dispose();
        Assert.True(store.ScrapesRefused >= 1);

        // The deadline cuts both off; then scrapes are answered again and count what happened.
        Assert.True(SpinWait.SpinUntil(() => store.ScrapesCut >= 2, TimeSpan.FromSeconds(30)), $"cut: {store.ScrapesCut}");
        Assert.True(await ClosedByServerAsync(first) && await ClosedByServerAsync(second), "the server closed both connections");
        Scrape after = await app.ScrapeAsync();
        Assert.True(Assert.Single(after.Named("percpu_scrapes_cut_total")).Value >= 2);
        Assert.True(Assert.Single(after.Named("percpu_scrapes_refused_total")).Value >= 1);
    }

    [Fact]
    public async Task SlowReadersArrivingApart_PinAtMostFourRenderings()
    {
        await using TestApp app = await TestApp.StartAsync(o => o.MaxSeriesPerMetric = 200_000);
        Fill(app);
        ScrapeEndpoint endpoint = app.App.Services.GetRequiredService<ScrapeEndpoint>();
        var uri = new Uri(app.Client.BaseAddress!, "/metrics");
        long before = endpoint.Renderings;
        var readers = new List<Socket>();
        try
        {
            for (int i = 0; i < 7; i++)
            {
                readers.Add(await SlowReaderAsync(uri));
                Assert.True(SpinWait.SpinUntil(() => endpoint.InFlight == readers.Count, TimeSpan.FromSeconds(10)));
                await Task.Delay(1300, Ct); // past the one-second window in which a sent rendering is shared anyway
            }

            Assert.Equal(7, endpoint.InFlight);
            Assert.InRange(endpoint.Renderings - before, 1, ScrapeEndpoint.MaxRenderingsHeld); // without the bound: 7
        }
        finally
        {
            readers.ForEach(r => r.Dispose());
        }
    }

    private static void Fill(TestApp app)
    {
        CounterFamily big = app.App.Services.GetRequiredService<MetricRegistry>().CreateCounter("big.family", null, null, "key");
        for (int i = 0; i < 150_000; i++)
        {
            big.WithLabels($"a-label-value-long-enough-to-fill-the-socket-buffers-{i:D8}"); // about 12 MB of text
        }
    }

    /// <summary>A connection that asks for the scrape and never reads (a 4 KB receive buffer).</summary>
    private static async Task<Socket> SlowReaderAsync(Uri uri)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
        await socket.ConnectAsync(uri.Host, uri.Port, Ct);
        await socket.SendAsync(Encoding.ASCII.GetBytes($"GET {uri.AbsolutePath} HTTP/1.1\r\nHost: {uri.Authority}\r\n\r\n"), SocketFlags.None, Ct);
        return socket;
    }

    /// <summary>Drains what the server had sent; true when the server then closed or reset the connection.</summary>
    private static async Task<bool> ClosedByServerAsync(Socket socket)
    {
        byte[] buffer = new byte[1 << 16];
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        try
        {
            while (await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token) > 0)
            {
            }

            return true; // an orderly close before the 12 MB body was complete
        }
        catch (SocketException)
        {
            return true; // reset
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
