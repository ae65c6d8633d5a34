using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Metadata;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// All request metrics of one application: endpoint handles, the series cap and its overflow series, active-request
/// counters, error types and request rates. A singleton.
/// </summary>
internal sealed class HttpMetricsStore : PerCpu.Families.ISeriesBudget
{
    /// <summary>Distinct <c>error.type</c> values kept; further exception types are reported as <c>_OTHER</c>.</summary>
    public const int MaxErrorTypes = 63;

    /// <summary>
    /// The <c>error.type</c> index of a 5xx answered without an exception: the status code itself, as OpenTelemetry's
    /// ASP.NET Core instrumentation and the HTTP semantic conventions report it.
    /// </summary>
    public const int StatusErrorIndex = MaxErrorTypes + 1;

    /// <summary>The key ASP.NET Core's terminal middleware sets in <see cref="HttpContext.Items"/> for a request no one handled.</summary>
    public const string RequestUnhandledKey = "__RequestUnhandled";

    // Route-less endpoints' keys in _byRoute (not route texts: a template can be any text).
    private const string NoRouteKey = "\0no-route";
    private const string UnhandledKey = "\0unhandled";

    private readonly EndpointTable _byEndpoint = new();
    private readonly ConcurrentDictionary<string, EndpointMetrics> _byRoute = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<Type, int> _errorIndexes = new();
    private readonly string?[] _errorNames = new string?[MaxErrorTypes + 1];
    private readonly int _maxSeries;
    private int _series;
    private int _errorCount;
    private long _overflowRecords;
    private long _recordingFailures;

    private readonly PerCpu.Families.MetricRegistry? _registry;
    private long _truncated;

    public HttpMetricsStore(IOptions<PerCpuMetricsOptions> options, TimeProvider time, PerCpu.Families.MetricRegistry? registry = null)
    {
        _registry = registry;
        PerCpuMetricsOptions o = options.Value;
        Options = o;
        Layout = new HistogramLayout(o.HistogramScale, o.HistogramMinExponent, o.HistogramMaxExponent, o.DurationBoundaries);
        _maxSeries = o.MaxSeriesPerMetric;
        Exemplars = o.Exemplars;
        ProvideTagsFeature = o.ProvideMetricsTagsFeature;
        Clock = PerCpuClock.Resolve(o.Clock, out string clockReason);
        ClockDetail = clockReason;
        _errorNames[0] = null;
        OverflowSeries = new RequestSeries(0, "", 0, Labels.StatusOther, 0, 0, null, isOverflow: true, Layout);
        UnmatchedRoute = string.IsNullOrEmpty(o.UnmatchedRoute) ? null : o.UnmatchedRoute;
        Unmatched = new EndpointMetrics(UnmatchedRoute, excluded: false, this);
        Unhandled = new EndpointMetrics(UnmatchedRoute, excluded: false, this, unhandled: true);
        _byRoute[UnmatchedRoute ?? NoRouteKey] = Unmatched; // a template equal to the opt-in value shares its series
        _byRoute[UnhandledKey] = Unhandled;
        for (int m = 0; m < Labels.Methods.Length; m++)
        {
            for (int s = 0; s < Labels.Schemes.Length; s++)
            {
                Active[(m * 2) + s] = new PerCpuUpDownCounter();
            }
        }

        Rates = new RateTracker(this, time, o.RateWindowsSeconds);
        Producer = new HttpMetricsProducer(this);
    }

    /// <summary>These metrics as families, for every writer.</summary>
    public HttpMetricsProducer Producer { get; }

    public PerCpuMetricsOptions Options { get; }

    /// <summary>The source of the request timestamps (<see cref="PerCpuMetricsOptions.Clock"/> resolved once: both ends of every request use it).</summary>
    public PerCpuClockSource Clock { get; }

    /// <summary>Why <see cref="Clock"/> is what it is.</summary>
    public string ClockDetail { get; }

    /// <summary><see cref="PerCpuMetricsOptions.ProvideMetricsTagsFeature"/>.</summary>
    public bool ProvideTagsFeature { get; }

    /// <summary>Whether requests under a sampled activity leave exemplars (<see cref="PerCpuMetricsOptions.Exemplars"/>).</summary>
    public bool Exemplars { get; }

    public HistogramLayout Layout { get; }

    public RequestSeries OverflowSeries { get; }

    /// <summary><see cref="PerCpuMetricsOptions.UnmatchedRoute"/>, or null: no <c>http.route</c> where no route is known.</summary>
    public string? UnmatchedRoute { get; }

    /// <summary>Requests that matched no endpoint but were handled (a terminal middleware), and route-less endpoints.</summary>
    public EndpointMetrics Unmatched { get; }

    /// <summary>Requests that reached the end of the pipeline unhandled: <c>aspnetcore.request.is_unhandled="true"</c>.</summary>
    public EndpointMetrics Unhandled { get; }

    public RateTracker Rates { get; }

    /// <summary><c>http.server.active_requests</c> by method index × 2 + scheme index.</summary>
    public PerCpuUpDownCounter[] Active { get; } = new PerCpuUpDownCounter[Labels.Methods.Length * Labels.Schemes.Length];

    /// <summary>Requests recorded in the overflow series because the cap was reached.</summary>
    public long OverflowRecords => Volatile.Read(ref _overflowRecords);

    public int SeriesCount => Math.Min(Volatile.Read(ref _series), _maxSeries);

    public bool SeriesCapReached => Volatile.Read(ref _series) >= _maxSeries;

    public bool TryReserveSeries()
    {
        if (Interlocked.Increment(ref _series) <= _maxSeries)
        {
            return true;
        }

        Interlocked.Decrement(ref _series);
        return false;
    }

    public void CountOverflow() => Interlocked.Increment(ref _overflowRecords);

    /// <summary>Series created with a custom request tag value cut at <see cref="PerCpuMetricsOptions.MaxLabelValueLength"/>.</summary>
    public long TruncatedLabelValues => Volatile.Read(ref _truncated);

    /// <summary>Counts a cut value, in the registry's <c>percpu_label_values_truncated_total</c> too.</summary>
    public void CountTruncatedLabelValue()
    {
        Interlocked.Increment(ref _truncated);
        _registry?.CountCut();
    }

    private long _scrapesRefused;
    private long _scrapesCut;

    /// <summary>Scrapes answered 503 because <see cref="PerCpuMetricsOptions.MaxConcurrentScrapes"/> were in flight.</summary>
    public long ScrapesRefused => Volatile.Read(ref _scrapesRefused);

    /// <summary>Scrapes cut off because the reader had not taken the response within <see cref="PerCpuMetricsOptions.ScrapeTimeout"/>.</summary>
    public long ScrapesCut => Volatile.Read(ref _scrapesCut);

    public void CountScrapeRefused() => Interlocked.Increment(ref _scrapesRefused);

    public void CountScrapeCut() => Interlocked.Increment(ref _scrapesCut);

    /// <summary>Failures of the middleware's own recording (expected: none), with the last one for diagnostics.</summary>
    public long RecordingFailures => Volatile.Read(ref _recordingFailures);

    public Exception? LastRecordingFailure { get; private set; }

    public void CountRecordingFailure(Exception ex)
    {
        LastRecordingFailure = ex;
        Interlocked.Increment(ref _recordingFailures);
    }

    /// <summary>The handles of an endpoint (null: the request matched none). One reference-keyed lookup per request.</summary>
    public EndpointMetrics ForEndpoint(Endpoint? endpoint)
    {
        if (endpoint is null)
        {
            return Unmatched;
        }

        return _byEndpoint.Find(endpoint) ?? Resolve(endpoint);
    }

    public IEnumerable<EndpointMetrics> Endpoints() => _byRoute.Values;

    /// <summary>
    /// Every series a reader reports: those of endpoints that are not excluded, then the overflow series. The one walk
    /// the scrape, the meter and the OTLP exporter share.
    /// </summary>
    public IEnumerable<RequestSeries> RecordedSeries() =>
        Endpoints().Where(e => !e.Excluded).SelectMany(e => e.Series()).Append(OverflowSeries);

    /// <summary>
    /// <c>http.server.active_requests</c> by method and scheme: GET over http always (so the metric exists at rest),
    /// any other combination while it is non-zero.
    /// </summary>
    public IEnumerable<(string Method, string Scheme, long Value)> ActiveRequests()
    {
        for (int m = 0; m < Labels.Methods.Length; m++)
        {
            for (int sc = 0; sc < Labels.Schemes.Length; sc++)
            {
                long value = Active[(m * 2) + sc].Sum();
                if (value != 0 || (m == 1 && sc == 0))
                {
                    yield return (Labels.Methods[m], Labels.Schemes[sc], value);
                }
            }
        }
    }

    /// <summary>The <c>error.type</c> value of an index (null: none); <paramref name="status"/> names a 5xx without an exception.</summary>
    public string? ErrorTypeName(int index, int status) =>
        index == 0 ? null : index == StatusErrorIndex ? Labels.Statuses[status] : _errorNames[index] ?? Labels.Other;

    /// <summary>Index of an exception type for <c>error.type</c> (the exception path only, never the common path).</summary>
    public int ErrorIndex(Exception exception)
    {
        Type type = exception.GetType();
        if (_errorIndexes.TryGetValue(type, out int index))
        {
            return index;
        }

        lock (_errorIndexes)
        {
            if (_errorIndexes.TryGetValue(type, out index))
            {
                return index;
            }

            if (_errorCount >= MaxErrorTypes - 1)
            {
                return MaxErrorTypes; // _OTHER
            }

            index = ++_errorCount;
            _errorNames[index] = type.FullName ?? type.Name;
            _errorIndexes[type] = index;
            return index;
        }
    }

    private EndpointMetrics Resolve(Endpoint endpoint)
    {
        // Endpoints without a route template (routing's 405 endpoint, custom endpoints) have no http.route: they share
        // the unmatched value, so their labels stay bounded too.
        string? route = (endpoint as RouteEndpoint)?.RoutePattern.RawText ?? UnmatchedRoute;
        bool excluded = endpoint.Metadata.GetMetadata<ExcludeFromPerCpuMetricsAttribute>() is not null
            || endpoint.Metadata.GetMetadata<IDisableHttpMetricsMetadata>() is not null;
        string key = route ?? NoRouteKey;
        EndpointMetrics metrics = _byRoute.GetOrAdd(excluded ? "\0excluded:" + key : key, static (r, state) => new EndpointMetrics(state.Route, state.Excluded, state.Store), (Route: route, Excluded: excluded, Store: this));
        _byEndpoint.Add(endpoint, metrics); // beyond EndpointTable.MaxEntries endpoints, found by route text each time
        return metrics;
    }
}
