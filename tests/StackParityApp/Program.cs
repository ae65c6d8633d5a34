using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Http.Features;
using OpenTelemetry.Metrics;

// `--stack percpu` or `--stack otel`; /metrics on either; /healthz answers once started.
var builder = WebApplication.CreateBuilder(args);
builder.Logging.SetMinimumLevel(LogLevel.Warning);
string stack = builder.Configuration["stack"] ?? throw new InvalidOperationException("give --stack percpu or --stack otel");
bool otel = stack switch
{
    "otel" => true,
    "percpu" => false,
    _ => throw new InvalidOperationException($"--stack {stack}: use percpu or otel"),
};

if (otel)
{
    builder.Services.AddOpenTelemetry().WithMetrics(m => m.AddAspNetCoreInstrumentation().AddMeter(Units.MeterName).AddPrometheusExporter());
}
else
{
    builder.Services.AddPerCpuMetrics(o => o.Meters.Add(Units.MeterName));
}

var app = builder.Build();
app.Lifetime.ApplicationStarted.Register(() => Units.Create(app.Services.GetRequiredService<IMeterFactory>())); // once both stacks listen
app.UseExceptionHandler(new ExceptionHandlerOptions { ExceptionHandler = c => c.Response.WriteAsync("handled") });
if (!otel)
{
    app.UsePerCpuMetrics();
}

app.MapGet("/healthz", () => "ok").DisableHttpMetrics();
app.MapGet("/items/{id:int}", (int id) => Results.Ok(id));
app.MapPost("/items", () => Results.Created("/items/1", 1));
app.MapGet("/status/{code:int}", (int code) => Results.StatusCode(code));
app.MapGet("/throw", string () => throw new InvalidOperationException("parity"));
app.MapGet("/tenant/{name}", (string name, HttpContext context) =>
{
    // The documented way to enrich ASP.NET Core's request metric: both stacks must carry it as a label.
    context.Features.Get<IHttpMetricsTagsFeature>()?.Tags.Add(new("tenant", name));
    return name;
});
app.MapGet("/quiet", (HttpContext context) =>
{
    // A request the app takes out of the request metric at run time.
    if (context.Features.Get<IHttpMetricsTagsFeature>() is { } tags)
    {
        tags.MetricsDisabled = true;
    }

    return "quiet";
});

if (otel)
{
    app.MapPrometheusScrapingEndpoint("/metrics").DisableHttpMetrics();
}
else
{
    app.MapPerCpuMetrics();
}

app.Run();

/// <summary>One instrument per unit and suffix rule of the Prometheus names, each recorded once: both stacks must name them alike.</summary>
internal static class Units
{
    public const string MeterName = "Parity.Units";

    public static void Create(IMeterFactory factory)
    {
        Meter meter = factory.Create(MeterName);
        meter.CreateCounter<long>("parity.requests", "{request}").Add(1); // annotation only: no unit suffix
        meter.CreateCounter<long>("parity.sent", "By").Add(1); // By -> bytes, then _total
        meter.CreateCounter<long>("parity.errors", "1").Add(1); // unit 1 on a counter
        meter.CreateCounter<long>("parity.jobs_total", "{job}").Add(1); // already ends in _total
        meter.CreateCounter<long>("parity.total.orders", "{order}").Add(1); // total, not at the end
        meter.CreateCounter<double>("parity.busy.time", "s").Add(0.5); // s -> seconds on a counter
        meter.CreateObservableGauge("parity.stock.fill", () => 0.5, "1"); // unit 1 on a gauge
        meter.CreateObservableGauge("parity.fill.ratio", () => 0.25, "1"); // unit 1, name already ends in ratio
        meter.CreateObservableGauge("parity.throughput", () => 10.0, "By/s"); // a rate unit
        meter.CreateObservableGauge("parity.cpu", () => 12.5, "%"); // percent
        meter.CreateObservableGauge("parity.temperature", () => 21.0, "Cel"); // celsius
        meter.CreateObservableGauge("parity.per.unit", () => 3.0, "{request}/s"); // an annotation per second
        meter.CreateUpDownCounter<long>("parity.queue.depth", "{item}").Add(2); // up-down: no _total
        meter.CreateUpDownCounter<long>("parity.cache.size", "KiBy").Add(3); // KiBy -> kibibytes
        meter.CreateHistogram<double>("parity.latency", "ms").Record(3); // ms -> milliseconds
        meter.CreateHistogram<double>("parity.wait.seconds", "s").Record(1); // the name already holds the unit
        meter.CreateHistogram<double>("parity.payload", "By").Record(100); // bytes on a histogram
        meter.CreateObservableCounter("parity.cpu.time", () => 1.5, "s"); // an observable counter
        meter.CreateObservableUpDownCounter("parity.connections", () => 4L, "{connection}");
    }
}
