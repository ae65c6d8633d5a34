using System.Diagnostics;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// Records every request once: <c>http.server.active_requests</c> while it runs, then its duration in the series of its
/// route, method, status, scheme and protocol (plus <c>error.type</c>: an escaped exception's type, or the status code of
/// a 5xx without one; <c>aspnetcore.request.is_unhandled</c>; and the app's custom request tags), the way ASP.NET
/// Core's own <c>http.server.request.duration</c> with OpenTelemetry's instrumentation reports it.
/// </summary>
/// <remarks>
/// <para>
/// Per request: two timestamps, two up-down counter adds, two endpoint-feature reads (on the way in and at the end) and
/// lookups of the endpoint's handles by reference, one more feature read (the tags feature; the two re-execution
/// features too where PerCpu does not set the tags feature itself), every one through the indexer with a constant type
/// rather than the generic <c>Get&lt;T&gt;()</c>, and, unless the
/// hosting layer set one or <see cref="PerCpuMetricsOptions.ProvideMetricsTagsFeature"/> is off, one feature set of a
/// pooled <see cref="RequestTagsFeature"/>; one probe of an integer-keyed table (a request with custom tags also probes
/// its series' tag table), one histogram record and one route counter add; every
/// write is to the current CPU's cache line. No lock, no string work, nothing allocated when the rest of the pipeline
/// completes synchronously (when it completes asynchronously, the async state machine of <see cref="Awaited"/> is the
/// one allocation: it is how a middleware observes a <see cref="Task"/>). The middleware never throws: a failure of its
/// own is counted, and an exception from the pipeline is rethrown unchanged.
/// </para>
/// <para>
/// Counting once, as ASP.NET Core does: a request that <c>UseExceptionHandler</c> or
/// <c>UseStatusCodePagesWithReExecute</c> runs through the pipeline again is seen here twice; the second pass (it finds
/// the tags feature PerCpu set on the first, or, where PerCpu sets none, the re-execution features) is not recorded, and the first records the route of the original endpoint (the one
/// the re-execution feature names). A request whose exception escapes is recorded when its response completes, with the
/// status actually sent (an exception handler may choose it). A request the client aborted (the exception is a
/// cancellation or an I/O error and <see cref="HttpContext.RequestAborted"/> fired) is 499 with no <c>error.type</c>:
/// no client can inflate the 5xx rate.
/// </para>
/// </remarks>
internal sealed class PerCpuMetricsMiddleware(RequestDelegate next, HttpMetricsStore store)
{
    /// <summary>The request's labels as the middleware carries them: <c>(protocol &lt;&lt; 8) | (method &lt;&lt; 1) | https</c>.</summary>
    private const int ProtocolShift = 8;

    private const int ActiveMask = (1 << ProtocolShift) - 1;

    public Task Invoke(HttpContext context)
    {
        // Features are read through the indexer with a constant type, never Get<T>(): that is a generic virtual call,
        // which costs a runtime dictionary lookup and a generic cast per read (the top frames of a profile).
        IFeatureCollection features = context.Features;
        object? tagsSlot = features[typeof(IHttpMetricsTagsFeature)];
        if (tagsSlot is RequestTagsFeature)
        {
            // PerCpu set it on this request's first pass (a server sets features afresh for every request): this is
            // a re-execution of a request this middleware already counts, or a second PerCpu middleware in the pipeline.
            return next(context);
        }

        if ((tagsSlot is not null || !store.ProvideTagsFeature)
            && (features[typeof(IExceptionHandlerFeature)] is not null || features[typeof(IStatusCodeReExecuteFeature)] is not null))
        {
            // Where PerCpu sets no feature of its own (the hosting layer's is there, or the option is off), the
            // re-execution features tell: UseExceptionHandler and UseStatusCodePagesWithReExecute set them.
            return next(context);
        }

        // Routing usually ran already (WebApplication puts UseRouting first): then the endpoint is resolved once here.
        EndpointMetrics? known = EndpointOf(features) is { } endpoint ? store.ForEndpoint(endpoint) : null;
        if (known is { Excluded: true })
        {
            if (tagsSlot is null && store.ProvideTagsFeature)
            {
                // Marked, so that a re-execution of this request (its exception handler, its status page) is not
                // counted either: a shared instance that drops tags, since nothing of this request is recorded.
                features[typeof(IHttpMetricsTagsFeature)] = RequestTagsFeature.Excluded;
            }

            return next(context); // this endpoint opted out: not even active_requests
        }

        if (known is null)
        {
            // Routing runs later: if the endpoint turns out to be the scrape, it takes its own request out of the
            // active gauge (ActiveRequestMark.Release). A static marker: nothing allocated per request.
            features[typeof(ActiveRequestMark)] = ActiveRequestMark.Counted;
        }

        // The labels of the request known on the way in, read before the tags feature is set (setting a feature makes
        // HttpContext fetch its cached features again): method and scheme (the active gauge's index) and the protocol.
        int request = ActiveIndex(context) | (Labels.Protocol(context.Request.Protocol) << ProtocolShift);
        var tags = tagsSlot as IHttpMetricsTagsFeature;
        if (tags is null && store.ProvideTagsFeature)
        {
            // ASP.NET Core's hosting layer sets this feature only while something listens to its own meter; the app's
            // custom tags (and MetricsDisabled) go through it either way. Lent from a per-thread pool, taken back once
            // the request is recorded: nothing allocated per request in the steady state.
            tags = RequestTagsFeature.Rent();
            features[typeof(IHttpMetricsTagsFeature)] = tags;
        }

        long start = PerCpuClock.GetTimestamp(store.Clock);
        store.Active[request & ActiveMask].Increment();
        Task task;
        try
        {
            task = next(context);
        }
        catch (Exception ex)
        {
            Complete(context, known, tags, start, request, ex);
            throw;
        }

        if (task.IsCompletedSuccessfully)
        {
            Complete(context, known, tags, start, request, null);
            return Task.CompletedTask;
        }

        return Awaited(task, context, known, tags, start, request);
    }

    private async Task Awaited(Task task, HttpContext context, EndpointMetrics? known, IHttpMetricsTagsFeature? tags, long start, int request)
    {
        try
        {
            await task.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            Complete(context, known, tags, start, request, ex);
            throw;
        }

        Complete(context, known, tags, start, request, null);
    }

    /// <summary>What <c>HttpContext.GetEndpoint()</c> returns, without its generic feature read.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Endpoint? EndpointOf(IFeatureCollection features) => (features[typeof(IEndpointFeature)] as IEndpointFeature)?.Endpoint;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int ActiveIndex(HttpContext context) => (Labels.Method(context.Request.Method) * 2) + (context.Request.IsHttps ? 1 : 0);

    private void Complete(HttpContext context, EndpointMetrics? known, IHttpMetricsTagsFeature? tags, long start, int request, Exception? exception)
    {
        try
        {
            if (known is not null || context.Features[typeof(ActiveRequestMark)] != ActiveRequestMark.Released)
            {
                store.Active[request & ActiveMask].Decrement();
            }

            if (exception is null)
            {
                HttpResponse response = context.Response;
                int status = response.StatusCode;
                if (status < 400)
                {
                    Record(context, tags, start, request, 0, status);
                    return;
                }

                // An exception an inner UseExceptionHandler handled still names error.type, as in ASP.NET Core's metric.
                int handled = context.Features[typeof(IExceptionHandlerFeature)] is IExceptionHandlerFeature { Error: { } error } ? store.ErrorIndex(error) : 0;
                if (response.HasStarted || context.Features[typeof(IStatusCodePagesFeature)] is not IStatusCodePagesFeature { Enabled: true })
                {
                    Record(context, tags, start, request, handled, status);
                    return;
                }

                // An error status that UseStatusCodePages may still turn into a page, perhaps by re-executing the request
                // elsewhere: recorded when the response completes, with what was sent (the error path, never the common one).
                response.OnCompleted(static state =>
                {
                    var s = (CompletedState)state;
                    s.Middleware.RecordCompleted(s);
                    return Task.CompletedTask;
                }, new CompletedState(this, context, tags, start, request, handled));
            }
            else
            {
                // The exception path (never the common one): the status is known once the response completes, after any
                // exception handler ran, and after Kestrel chose 500 or, for a client that went away, 499. Until then
                // the request is not active any more but not yet recorded.
                int error = store.ErrorIndex(exception);
                context.Response.OnCompleted(static state =>
                {
                    var s = (CompletedState)state;
                    s.Middleware.RecordCompleted(s);
                    return Task.CompletedTask;
                }, new CompletedState(this, context, tags, start, request, error, exception));
            }
        }
        catch (Exception ex) when (exception is null || !ReferenceEquals(ex, exception))
        {
            // Metrics must never hurt the request. Nothing here is expected to throw; if something does, the request
            // completes normally and the failure is counted (percpu_recording_failures_total), never hidden.
            store.CountRecordingFailure(ex);
        }
    }

    private void RecordCompleted(CompletedState s)
    {
        try
        {
            // What was sent: the server's 500 for an unhandled exception, what an exception handler chose, or Kestrel's
            // 499 for a client that went away. error.type as the hosting layer gets it: an exception Kestrel took for
            // the client going away (a cancellation or an I/O error once the connection was aborted) names none.
            int error = s.Exception is not null && KestrelApplicationError.TookAsClientGone(s.Context, s.Exception) ? 0 : s.Error;
            Record(s.Context, s.Tags, s.Start, s.Request, error, s.Context.Response.StatusCode);
        }
        catch (Exception ex)
        {
            store.CountRecordingFailure(ex);
        }
    }

    private void Record(HttpContext context, IHttpMetricsTagsFeature? tags, long start, int request, int error, int status)
    {
        long elapsed = PerCpuClock.GetElapsedStopwatchTicks(store.Clock, start); // in Stopwatch ticks, as RecordTicks takes them

        // The endpoint that produced the response, as ASP.NET Core's own metric reports it: after a re-execution, the
        // handler's, so it is looked up again (one reference-keyed probe) rather than taken from the way in. An exception
        // handler that answers in place clears the endpoint; ASP.NET Core then reports the endpoint that threw.
        IFeatureCollection features = context.Features;
        Endpoint? final = EndpointOf(features);
        if (final is null && error != 0 && features[typeof(IExceptionHandlerFeature)] is IExceptionHandlerFeature { Endpoint: { } threw })
        {
            final = threw;
        }

        // A request that matched nothing: unhandled (ASP.NET Core's terminal middleware marked it) or answered by a
        // middleware of the app's own; both carry no http.route unless UnmatchedRoute gives one.
        EndpointMetrics endpoint = final is not null ? store.ForEndpoint(final)
            : context.Items.ContainsKey(HttpMetricsStore.RequestUnhandledKey) ? store.Unhandled
            : store.Unmatched;
        // The tags feature of the way in (the hosting layer's or PerCpu's), or one the app set since, where there was none.
        tags ??= features[typeof(IHttpMetricsTagsFeature)] as IHttpMetricsTagsFeature;
        try
        {
            if (endpoint.Excluded || tags is { MetricsDisabled: true })
            {
                return;
            }

            if (error == 0 && (uint)(status - 500) < 100)
            {
                error = HttpMetricsStore.StatusErrorIndex; // a 5xx without an exception: error.type is the status code
            }

            int key = EndpointMetrics.Pack((request & ActiveMask) >> 1, Labels.Status(status), request & 1, request >> ProtocolShift, error);
            RequestSeries series = endpoint.GetSeries(key);
            if (tags is not null && tags.Tags.Count != 0 && !series.IsOverflow)
            {
                series = CustomTags.SeriesFor(series, tags.Tags, store);
            }

            if (series.IsOverflow)
            {
                store.CountOverflow();
            }

            series.Duration.RecordTicks(elapsed, store.Exemplars ? Activity.Current : null); // an exemplar when the activity is sampled

            endpoint.Requests.Increment();
        }
        finally
        {
            if (tags is RequestTagsFeature lent && !ReferenceEquals(lent, RequestTagsFeature.Excluded))
            {
                RequestTagsFeature.Return(lent);
            }
        }
    }

    private sealed record CompletedState(PerCpuMetricsMiddleware Middleware, HttpContext Context, IHttpMetricsTagsFeature? Tags, long Start, int Request, int Error, Exception? Exception = null);
}

/// <summary>
/// Marks a request counted in <c>http.server.active_requests</c> before routing ran (so before anyone knew whether its
/// endpoint is excluded). The scrape endpoint releases its own request, so a scrape never reports itself as active.
/// Two static instances: setting the feature allocates nothing per request.
/// </summary>
internal sealed class ActiveRequestMark
{
    public static readonly ActiveRequestMark Counted = new();

    public static readonly ActiveRequestMark Released = new();

    private ActiveRequestMark()
    {
    }

    /// <summary>If the middleware counted <paramref name="context"/> as active, takes it out now, once.</summary>
    public static void Release(HttpContext context, HttpMetricsStore store)
    {
        if (context.Features[typeof(ActiveRequestMark)] == Counted)
        {
            context.Features[typeof(ActiveRequestMark)] = Released;
            store.Active[PerCpuMetricsMiddleware.ActiveIndex(context)].Decrement();
        }
    }
}
