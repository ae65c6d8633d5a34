using PerCpu;

// A small service counting its requests with PerCpu counters. `dotnet run --project samples/WebApi` serves it on
// http://127.0.0.1:5080 (appsettings.json). The request-metrics middleware replaces the hand-written one below
// once PerCpu.AspNetCore ships it.
var builder = WebApplication.CreateBuilder(args);
builder.Services.AddSingleton<RequestCounters>();

var app = builder.Build();
app.Logger.LogInformation("{Selection}", ProcessorId.Selection);

var counters = app.Services.GetRequiredService<RequestCounters>();
app.Use((context, next) =>
{
    counters.Active.Increment();
    try
    {
        return next(context);
    }
    finally
    {
        counters.Active.Decrement();
        counters.Requests.Increment();
    }
});

app.MapGet("/", () => "PerCpu sample: try /items/42, /slow, /stats");
app.MapGet("/items/{id:int}", (int id) => Results.Ok(new Item(id, $"item {id}")));
app.MapGet("/slow", async (int? ms, CancellationToken ct) =>
{
    await Task.Delay(Math.Clamp(ms ?? 50, 0, 5_000), ct);
    return Results.Ok();
});
app.MapGet("/stats", (RequestCounters c) => Results.Ok(new
{
    requests = c.Requests.Sum(),
    active = c.Active.Sum(),
    strategy = ProcessorId.Strategy.ToString(),
    reason = ProcessorId.Selection.Reason,
    slots = ProcessorId.SlotCount,
}));

app.Run();

internal sealed record Item(int Id, string Name);

internal sealed class RequestCounters
{
    public PerCpuCounter Requests { get; } = new();

    public PerCpuUpDownCounter Active { get; } = new();
}

/// <summary>Entry point marker for WebApplicationFactory in the integration tests.</summary>
public partial class Program;
