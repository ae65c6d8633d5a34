using System.Diagnostics;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// Records every request: <c>http.server.active_requests</c> while it runs, then its duration in the series of its
/// route, method, status, scheme and protocol (plus <c>error.type</c> when an exception escapes).
/// </summary>
/// <remarks>
/// Per request: two timestamps, two up-down counter adds, one endpoint-feature read and one lookup of the endpoint's
/// handles by reference, one feature read for <see cref="IHttpMetricsTagsFeature.MetricsDisabled"/>, one probe of an
/// integer-keyed table, one histogram record and one route counter add; every write is to the current CPU's cache
/// line. No lock, no string work, nothing allocated when the rest of the pipeline completes synchronously (when it
/// completes asynchronously, the async state machine of <see cref="Awaited"/> is the one allocation: it is how a
/// middleware observes a <see cref="Task"/>). The middleware never throws: a failure of its own is swallowed, and an
/// exception from the pipeline is recorded and rethrown unchanged.
/// </remarks>
internal sealed class PerCpuMetricsMiddleware(RequestDelegate next, HttpMetricsStore store)
{
    public Task Invoke(HttpContext context)
    {
        // Routing usually ran already (WebApplication puts UseRouting first): then the endpoint is resolved once here.
        EndpointMetrics? known = context.GetEndpoint() is { } endpoint ? store.ForEndpoint(endpoint) : null;
        if (known is { Excluded: true })
        {
            return next(context); // this endpoint opted out: not even active_requests
        }

        long start = Stopwatch.GetTimestamp();
        int activeIndex = ActiveIndex(context);
        store.Active[activeIndex].Increment();
        Task task;
        try
        {
            task = next(context);
        }
        catch (Exception ex)
        {
            Complete(context, known, start, activeIndex, ex);
            throw;
        }

        if (task.IsCompletedSuccessfully)
        {
            Complete(context, known, start, activeIndex, null);
            return Task.CompletedTask;
        }

        return Awaited(task, context, known, start, activeIndex);
    }

    private async Task Awaited(Task task, HttpContext context, EndpointMetrics? known, long start, int activeIndex)
    {
        try
        {
            await task.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            Complete(context, known, start, activeIndex, ex);
            throw;
        }

        Complete(context, known, start, activeIndex, null);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ActiveIndex(HttpContext context) => (Labels.Method(context.Request.Method) * 2) + (context.Request.IsHttps ? 1 : 0);

    private void Complete(HttpContext context, EndpointMetrics? known, long start, int activeIndex, Exception? exception)
    {
        long elapsed = Stopwatch.GetTimestamp() - start;
        try
        {
            store.Active[activeIndex].Decrement();
            EndpointMetrics endpoint = known ?? store.ForEndpoint(context.GetEndpoint()); // routed inside: look now
            if (endpoint.Excluded || context.Features.Get<IHttpMetricsTagsFeature>() is { MetricsDisabled: true })
            {
                return;
            }

            HttpRequest request = context.Request;
            int status = context.Response.StatusCode;
            int error = 0;
            if (exception is not null)
            {
                error = store.ErrorIndex(exception);
                if (!context.Response.HasStarted)
                {
                    status = StatusCodes.Status500InternalServerError; // what the server will send
                }
            }

            int key = EndpointMetrics.Pack(activeIndex >> 1, Labels.Status(status), activeIndex & 1, Labels.Protocol(request.Protocol), error);
            RequestSeries series = endpoint.GetSeries(key);
            if (series.IsOverflow)
            {
                store.CountOverflow();
            }

            series.Duration.RecordTicks(elapsed);
            endpoint.Requests.Increment();
        }
        catch (Exception ex) when (exception is null || !ReferenceEquals(ex, exception))
        {
            // Metrics must never hurt the request. Nothing here is expected to throw; if something does, the request
            // completes normally and the failure is counted (percpu_recording_failures_total), never hidden.
            store.CountRecordingFailure(ex);
        }
    }
}
