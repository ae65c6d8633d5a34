using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using PerCpu.AspNetCore.Otlp;

namespace PerCpu.AspNetCore.Tests;

/// <summary>
/// PerCpu's exporter over OTLP/gRPC against a real gRPC server on loopback (grpc-js, the official protos as OpenTelemetry
/// JS generates them): the data, the metadata, and the HTTP path's retry, Retry-After, split, deadline and shutdown
/// behaviour in gRPC's terms.
/// </summary>
public sealed class OtlpGrpcTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static Task<TestApp> StartAsync(GrpcReceiver receiver, Action<PerCpuOtlpExporterOptions>? more = null) =>
        TestApp.StartAsync(builder: b => b.Services.AddPerCpuOtlpExporter(o =>
        {
            o.Protocol = OtlpProtocol.Grpc;
            o.Endpoint = receiver.Endpoint;
            o.ExportInterval = TimeSpan.FromHours(1); // exports are triggered by the test
            o.RetryInitialBackoff = TimeSpan.FromMilliseconds(10);
            more?.Invoke(o);
        }));

    private static async Task Requests(TestApp app, int n)
    {
        for (int i = 0; i < n; i++)
        {
            using HttpResponseMessage r = await app.Client.GetAsync("/items/" + i, Ct);
        }
    }

    private static long Count(JsonElement call) => OtlpExporterTests.DurationCount(call.GetProperty("request"), null);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Export_OverGrpc_DecodedByTheOfficialDefinitions_WithMetadata(bool gzip)
    {
        await using GrpcReceiver receiver = await GrpcReceiver.StartAsync("ok");
        await using TestApp app = await StartAsync(receiver, o =>
        {
            o.Gzip = gzip;
            o.ExportTimeout = TimeSpan.FromSeconds(20);
        });
        await Requests(app, 12);
        Assert.True(await app.App.Services.GetRequiredService<OtlpExporterService>().ExportAsync(Ct));

        JsonElement call = Assert.Single(await receiver.ReceivedAsync(1)).Call;
        Assert.Equal(JsonValueKind.Null, call.GetProperty("invalid").ValueKind);
        Assert.Equal(12, Count(call));
        Assert.StartsWith("PerCpu-OTLP-Exporter-Dotnet/", call.GetProperty("userAgent").GetString(), StringComparison.Ordinal);
        // With gzip, the message decoded above only because grpc-js inflated it as grpc-encoding: gzip told it to.
        Assert.InRange(call.GetProperty("deadlineMs").GetDouble(), 1, 20_000); // grpc-timeout: the time left of the export
    }

    [Fact]
    public async Task Unavailable_WithRetryInfo_RetriedNoSoonerThanTheServerAsked()
    {
        await using GrpcReceiver receiver = await GrpcReceiver.StartAsync("unavailable-retry:0.4", "ok");
        await using TestApp app = await StartAsync(receiver, o => o.ExportTimeout = TimeSpan.FromSeconds(20));
        await Requests(app, 3);
        Assert.True(await app.App.Services.GetRequiredService<OtlpExporterService>().ExportAsync(Ct));

        (DateTimeOffset At, JsonElement Call)[] calls = await receiver.ReceivedAsync(2);
        Assert.Equal(2, calls.Length);
        Assert.True(calls[1].At - calls[0].At >= TimeSpan.FromMilliseconds(350), $"retried after {(calls[1].At - calls[0].At).TotalMilliseconds} ms, before the RetryInfo delay of 400 ms");
        Assert.Equal(3, Count(calls[1].Call));
    }

    [Fact]
    public async Task Unavailable_WithoutRetryInfo_RetriedWithBackoff()
    {
        await using GrpcReceiver receiver = await GrpcReceiver.StartAsync("unavailable", "unavailable", "ok");
        await using TestApp app = await StartAsync(receiver, o => o.ExportTimeout = TimeSpan.FromSeconds(20));
        await Requests(app, 2);
        Assert.True(await app.App.Services.GetRequiredService<OtlpExporterService>().ExportAsync(Ct));
        Assert.Equal(3, (await receiver.ReceivedAsync(3)).Length);
    }

    [Fact]
    public async Task InvalidArgument_NotRetried_DeltaKeptForTheNextExport()
    {
        await using GrpcReceiver receiver = await GrpcReceiver.StartAsync("invalid", "ok");
        await using TestApp app = await StartAsync(receiver, o => o.Temporality = OtlpTemporality.Delta);
        await Requests(app, 5);
        OtlpExporterService exporter = app.App.Services.GetRequiredService<OtlpExporterService>();

        Assert.False(await exporter.ExportAsync(Ct));
        Assert.Single(await receiver.ReceivedAsync(1)); // not retryable: one call
        await Requests(app, 2);
        Assert.True(await exporter.ExportAsync(Ct));
        Assert.Equal(7, Count((await receiver.ReceivedAsync(2)).Last().Call)); // the undelivered delta merged into the next export
    }

    [Fact]
    public async Task ResourceExhausted_WithoutRetryInfo_SplitsTheBatch_NothingLost()
    {
        await using GrpcReceiver receiver = await GrpcReceiver.StartAsync("exhausted", "ok");
        await using TestApp app = await StartAsync(receiver, o => o.ExportTimeout = TimeSpan.FromSeconds(20));
        for (int i = 0; i < 4; i++)
        {
            using HttpResponseMessage r = await app.Client.GetAsync($"/status/{200 + i}", Ct);
            using HttpResponseMessage s = await app.Client.GetAsync("/items/" + i, Ct);
        }

        Assert.True(await app.App.Services.GetRequiredService<OtlpExporterService>().ExportAsync(Ct));
        (DateTimeOffset At, JsonElement Call)[] calls = await receiver.ReceivedAsync(3);
        Assert.True(calls.Length >= 3, $"{calls.Length} calls: the refused batch was not split in two");
        Assert.Equal(8, Count(calls[0].Call));
        Assert.Equal(8, calls.Skip(1).Sum(c => Count(c.Call))); // the halves carry every request once
    }

    [Fact]
    public async Task ServerThatNeverAnswers_ExportEndsAtItsDeadline()
    {
        await using GrpcReceiver receiver = await GrpcReceiver.StartAsync("hang");
        await using TestApp app = await StartAsync(receiver, o => o.ExportTimeout = TimeSpan.FromSeconds(1));
        await Requests(app, 1);
        var clock = Stopwatch.StartNew();
        Assert.False(await app.App.Services.GetRequiredService<OtlpExporterService>().ExportAsync(Ct));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"the export took {clock.Elapsed} against a 1 s timeout");
        Assert.InRange(Assert.Single(await receiver.ReceivedAsync(1)).Call.GetProperty("deadlineMs").GetDouble(), -1000, 1000); // grpc-timeout said 1 s at most
    }

    [Fact]
    public async Task FromTheStandardVariables_Grpc_AndTheFinalExportOnShutdown()
    {
        await using GrpcReceiver receiver = await GrpcReceiver.StartAsync("ok");
        var settings = new Dictionary<string, string?>
        {
            ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc",
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.Endpoint.ToString(),
            ["OTEL_METRIC_EXPORT_INTERVAL"] = "3600000",
        };
        TestApp app = await TestApp.StartAsync(builder: b =>
        {
            b.Configuration.AddInMemoryCollection(settings);
            b.Services.AddPerCpuOtlpExporter();
        });
        try
        {
            Assert.Equal(OtlpProtocol.Grpc, app.App.Services.GetRequiredService<IOptions<PerCpuOtlpExporterOptions>>().Value.Protocol);
            await Requests(app, 4);
        }
        finally
        {
            await app.DisposeAsync(); // graceful stop: the final export goes over gRPC
        }

        await receiver.WaitForCallsAsync(1);
        Assert.Equal(4, Count(receiver.Calls.Last().Call));
    }

    [Theory]
    [InlineData("http/json")]
    [InlineData("grcp")]
    public async Task UnknownProtocol_FailsStartupNamingTheVariable(string protocol)
    {
        OptionsValidationException ex = await Assert.ThrowsAsync<OptionsValidationException>(async () =>
        {
            await using TestApp app = await TestApp.StartAsync(builder: b =>
            {
                b.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol });
                b.Services.AddPerCpuOtlpExporter();
            });
        });
        Assert.Contains("OTEL_EXPORTER_OTLP_PROTOCOL", ex.Message, StringComparison.Ordinal);
        Assert.Contains(protocol, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Options_GrpcDefaults()
    {
        var options = new PerCpuOtlpExporterOptions();
        new OtlpOptionsSetup(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc" }).Build()).Configure(options);
        Assert.Equal(OtlpProtocol.Grpc, options.Protocol);
        Assert.Equal(new Uri("http://localhost:4317"), options.Endpoint);

        var base_ = new PerCpuOtlpExporterOptions();
        new OtlpOptionsSetup(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc", ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4317" }).Build()).Configure(base_);
        Assert.Equal(new Uri("http://collector:4317"), base_.Endpoint); // no /v1/metrics for gRPC
        Assert.Equal(new Uri("http://collector:4317" + OtlpGrpc.ExportPath), OtlpGrpc.ExportUri(base_.Endpoint!));
    }

    [Theory]
    [InlineData("CAgSBHNsb3caMAoodHlwZS5nb29nbGVhcGlzLmNvbS9nb29nbGUucnBjLlJldHJ5SW5mbxIECgIIAw", 3.0)]
    [InlineData("CAgSBHNsb3c", null)]
    [InlineData("not base64!", null)]
    public void RetryInfo_ParsedFromTheStatusDetails(string details, double? seconds)
    {
        Assert.Equal(seconds is null ? null : TimeSpan.FromSeconds(seconds.Value), OtlpGrpc.RetryDelay(details));
    }
}
