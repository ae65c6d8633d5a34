using System.Diagnostics;
using System.Diagnostics.Metrics;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using PerCpu;

// A small service with PerCpu request metrics. `dotnet run --project samples/WebApi` serves it on
// http://127.0.0.1:5080 (appsettings.json); scrape http://127.0.0.1:5080/metrics.
// Everything goes through PerCpu's per-CPU pipeline: the HTTP metrics, the shop's own Meter instruments (POST
// /checkout), .NET's runtime meter and ASP.NET Core's meters, on /metrics and, when OTEL_EXPORTER_OTLP_ENDPOINT is set,
// over OTLP through PerCpu's native exporter (real OTLP histograms; each metric once). The OpenTelemetry SDK prints the
// PerCpu.AspNetCore meter to the console (Sample:ConsoleExport, every Sample:ConsoleExportIntervalSeconds);
// Sample:OtlpExporter=sdk sends OTLP through the SDK's exporter instead (the duration histogram then travels as
// .bucket/.count/.sum counters). The standard OTEL_* variables configure both exporters. A request with a sampled W3C
// traceparent is traced (parent-based sampling) and leaves an exemplar in its duration bucket.
var builder = WebApplication.CreateBuilder(args);
builder.Services.AddPerCpuMetrics(o => o.Meters.Add(Shop.MeterName));
builder.Services.AddSingleton<Shop>();
builder.Services.AddHealthChecks();

bool consoleExport = builder.Configuration.GetValue("Sample:ConsoleExport", true);
int consoleIntervalSeconds = Math.Clamp(builder.Configuration.GetValue("Sample:ConsoleExportIntervalSeconds", 10), 1, 3600);
bool otlp = !string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]);
bool nativeOtlp = otlp && !string.Equals(builder.Configuration["Sample:OtlpExporter"], "sdk", StringComparison.OrdinalIgnoreCase);
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
            metrics.AddMeter(Shop.MeterName, "System.Runtime");
            metrics.AddOtlpExporter();
        }
    })
    .WithTracing(tracing =>
    {
        // Requests whose W3C traceparent says "sampled" get a recorded activity (others are not traced), so their
        // durations leave exemplars (trace_id, span_id) in /metrics (OpenMetrics and protobuf) and in OTLP.
        tracing.AddSource("Microsoft.AspNetCore").SetSampler(new ParentBasedSampler(new AlwaysOffSampler()));
        if (otlp)
        {
            tracing.AddOtlpExporter();
        }
    });

var app = builder.Build();
app.Logger.LogInformation("{Selection}", ProcessorId.Selection);
app.Logger.LogInformation("PerCpu write path: {WritePath} ({Detail})", ProcessorId.WritePath, ProcessorId.WritePathDetail);
app.Logger.LogInformation("PerCpu request clock: {Clock} ({Detail})", PerCpuClock.Source, PerCpuClock.Detail);
int defaultSlowMs = app.Configuration.GetValue("Sample:SlowMilliseconds", 50);

// Unhandled exceptions become a 500 here (and are counted in aspnetcore.diagnostics.exceptions and error.type).
app.UseExceptionHandler(new ExceptionHandlerOptions { ExceptionHandler = context => Task.CompletedTask });
app.UsePerCpuMetrics();

app.MapGet("/", () => "PerCpu sample: /items/42, /slow?ms=100, /missing/7, /error, POST /items, POST /checkout {\"region\":\"eu\",\"items\":2}, /healthz, /metrics");
app.MapGet("/items/{id:int}", (int id) => Results.Ok(new Item(id, $"item {id}")));
app.MapPost("/items", (Item item) => item.Id > 0 ? Results.Created($"/items/{item.Id}", item) : Results.BadRequest("id must be positive"));
app.MapGet("/missing/{id}", (string id) => Results.NotFound());
app.MapGet("/slow", async (int? ms, CancellationToken ct) =>
{
    await Task.Delay(Math.Clamp(ms ?? defaultSlowMs, 0, 10_000), ct);
    return Results.Ok();
});
app.MapGet("/error", string () => throw new InvalidOperationException("the /error route always fails"));
app.MapPost("/checkout", (Checkout order, Shop shop) => shop.Place(order));
app.MapHealthChecks("/healthz").ExcludeFromPerCpuMetrics();

// IMPORTANT: in production, restrict the scrape endpoint, e.g. .RequireHost("*:9464") or .RequireAuthorization("metrics").
app.MapPerCpuMetrics();

app.Run();

internal sealed record Item(int Id, string Name);

internal sealed record Checkout(string Region, int Items);

/// <summary>The shop's business metrics, recorded with the standard Meter API and aggregated per CPU by PerCpu.</summary>
internal sealed class Shop
{
    public const string MeterName = "Shop";
    private static readonly string[] Regions = ["eu", "us", "apac"];
    private readonly Counter<long> _orders;
    private readonly Histogram<double> _checkout;

    public Shop(IMeterFactory meters)
    {
        Meter meter = meters.Create(MeterName);
        _orders = meter.CreateCounter<long>("shop.orders", "{order}", "Orders placed, by region.");
        _checkout = meter.CreateHistogram<double>("shop.checkout.duration", "s", "Time to place an order.");
    }

    public IResult Place(Checkout order)
    {
        long start = Stopwatch.GetTimestamp();
        // Tag values from a fixed set, never raw input: label values stay bounded.
        string region = Array.Find(Regions, r => string.Equals(r, order.Region, StringComparison.OrdinalIgnoreCase)) ?? "other";
        if (order.Items <= 0)
        {
            return Results.BadRequest("items must be positive");
        }

        var tag = new KeyValuePair<string, object?>("region", region);
        _orders.Add(1, tag);
        _checkout.Record(Stopwatch.GetElapsedTime(start).TotalSeconds, tag);
        return Results.Created($"/orders/{Guid.NewGuid():N}", new { region, order.Items });
    }
}

/// <summary>Entry point marker for WebApplicationFactory in the integration tests.</summary>
public partial class Program;
