using System.Diagnostics;
using System.Runtime.InteropServices;
using OpenTelemetry.Metrics;
using Prometheus;

// One app, four ways to measure it; the end-to-end driver (PerCpu.Benchmarks `endtoend`) starts a fresh process per
// measurement: `EndToEndApp --variant none|percpu|otel|promnet --urls http://127.0.0.1:PORT`.
// On SIGHUP it prints one line "STATS <allocated bytes> <CPU ms>" (no request, so no variant counts it).
string variant = args.SkipWhile(a => a != "--variant").Skip(1).FirstOrDefault() ?? "none";
var builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.ClearProviders();

switch (variant)
{
    case "percpu":
        builder.Services.AddPerCpuMetrics();
        break;
    case "otel":
        // ASP.NET Core's own hosting metrics, consumed by the OpenTelemetry SDK, exposed with its Prometheus exporter.
        builder.Services.AddOpenTelemetry().WithMetrics(m => m.AddAspNetCoreInstrumentation().AddPrometheusExporter());
        break;
    case "promnet":
    case "none":
        break;
    default:
        throw new ArgumentException($"unknown --variant {variant}: use none, percpu, otel or promnet");
}

var app = builder.Build();
switch (variant)
{
    case "percpu":
        app.UsePerCpuMetrics();
        app.MapPerCpuMetrics();
        break;
    case "otel":
        app.MapPrometheusScrapingEndpoint();
        break;
    case "promnet":
        app.UseHttpMetrics();
        app.MapMetrics();
        break;
}

app.MapGet("/items/{id:int}", (int id) => Results.Ok(new Item(id, "item")));
app.MapGet("/missing/{id}", (string id) => Results.NotFound());
app.MapGet("/fail", () => Results.StatusCode(500));
app.MapMethods("/status/{code:int}", ["GET", "POST", "PUT", "DELETE", "PATCH"], (int code) => Results.StatusCode(code)); // many series (scrapeburst)

using var stats = PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
{
    context.Cancel = true;
    Console.Out.WriteLine($"STATS {GC.GetTotalAllocatedBytes(precise: true)} {Process.GetCurrentProcess().TotalProcessorTime.TotalMilliseconds:0.###}");
    Console.Out.Flush();
});

Console.Out.WriteLine("READY " + variant);
app.Run();

internal sealed record Item(int Id, string Name);
