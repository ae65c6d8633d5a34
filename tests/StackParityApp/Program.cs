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
    builder.Services.AddOpenTelemetry().WithMetrics(m => m.AddAspNetCoreInstrumentation().AddPrometheusExporter());
}
else
{
    builder.Services.AddPerCpuMetrics();
}

var app = builder.Build();
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
