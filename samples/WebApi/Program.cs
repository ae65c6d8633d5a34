using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using PerCpu;

// A small service with PerCpu request metrics. `dotnet run --project samples/WebApi` serves it on
// http://127.0.0.1:5080 (appsettings.json); scrape http://127.0.0.1:5080/metrics.
// The same numbers reach OpenTelemetry: the SDK listens to the PerCpu.AspNetCore meter and prints it to the console
// (Sample:ConsoleExport, every Sample:ConsoleExportIntervalSeconds). When OTEL_EXPORTER_OTLP_ENDPOINT is set, metrics
// go out over OTLP too: through the SDK's exporter by default, or through PerCpu's native exporter (real OTLP
// histograms from the per-CPU store) with Sample:OtlpExporter=percpu. The standard OTEL_* variables configure both.
var builder = WebApplication.CreateBuilder(args);
builder.Services.AddPerCpuMetrics();
builder.Services.AddHealthChecks();

bool consoleExport = builder.Configuration.GetValue("Sample:ConsoleExport", true);
int consoleIntervalSeconds = Math.Clamp(builder.Configuration.GetValue("Sample:ConsoleExportIntervalSeconds", 10), 1, 3600);
bool otlp = !string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]);
bool nativeOtlp = otlp && string.Equals(builder.Configuration["Sample:OtlpExporter"], "percpu", StringComparison.OrdinalIgnoreCase);
if (nativeOtlp)
{
    builder.Services.AddPerCpuOtlpExporter();
}

builder.Services.AddOpenTelemetry()
    .ConfigureResource(resource => resource.AddService(serviceName: builder.Configuration["OTEL_SERVICE_NAME"] ?? "percpu-sample"))
    .WithMetrics(metrics =>
    {
        metrics.AddMeter("PerCpu.AspNetCore");
        if (consoleExport)
        {
            metrics.AddConsoleExporter((_, reader) => reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = consoleIntervalSeconds * 1000);
        }

        if (otlp && !nativeOtlp)
        {
            metrics.AddOtlpExporter();
        }
    });

var app = builder.Build();
app.Logger.LogInformation("{Selection}", ProcessorId.Selection);
int defaultSlowMs = app.Configuration.GetValue("Sample:SlowMilliseconds", 50);

app.UsePerCpuMetrics();

app.MapGet("/", () => "PerCpu sample: /items/42, /slow?ms=100, /missing/7, /error, POST /items, /healthz, /metrics");
app.MapGet("/items/{id:int}", (int id) => Results.Ok(new Item(id, $"item {id}")));
app.MapPost("/items", (Item item) => item.Id > 0 ? Results.Created($"/items/{item.Id}", item) : Results.BadRequest("id must be positive"));
app.MapGet("/missing/{id}", (string id) => Results.NotFound());
app.MapGet("/slow", async (int? ms, CancellationToken ct) =>
{
    await Task.Delay(Math.Clamp(ms ?? defaultSlowMs, 0, 10_000), ct);
    return Results.Ok();
});
app.MapGet("/error", string () => throw new InvalidOperationException("the /error route always fails"));
app.MapHealthChecks("/healthz").ExcludeFromPerCpuMetrics();

// IMPORTANT: in production, restrict the scrape endpoint, e.g. .RequireHost("*:9464") or .RequireAuthorization("metrics").
app.MapPerCpuMetrics();

app.Run();

internal sealed record Item(int Id, string Name);

/// <summary>Entry point marker for WebApplicationFactory in the integration tests.</summary>
public partial class Program;
