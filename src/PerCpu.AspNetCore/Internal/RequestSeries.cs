using System.Runtime.CompilerServices;
using PerCpu.Families;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// One label combination of <c>http.server.request.duration</c>: its labels and its per-CPU histogram. A series of an
/// endpoint's label combination may hold, beside its own histogram, the series of the custom request tags
/// (<see cref="Microsoft.AspNetCore.Http.Features.IHttpMetricsTagsFeature.Tags"/>) recorded with that combination.
/// </summary>
internal sealed class RequestSeries
{
    private TagSeriesTable<RequestSeries>? _tagged;

    public RequestSeries(int key, string? route, int method, int status, int scheme, int protocol, string? errorType, bool isOverflow, HistogramLayout layout, bool unhandled = false)
    {
        Key = key;
        Route = route;
        Method = Labels.Methods[method];
        Status = Labels.Statuses[status];
        StatusCode = status == Labels.StatusOther ? Labels.Other : 100 + status;
        Scheme = Labels.Schemes[scheme];
        Protocol = Labels.Protocols[protocol];
        ErrorType = errorType;
        IsOverflow = isOverflow;
        Unhandled = unhandled;
        Duration = new PerCpuHistogram(layout);
    }

    /// <summary>A series of <paramref name="parent"/>'s labels plus custom request tags (set by the walk that first reads it).</summary>
    private RequestSeries(RequestSeries parent, HistogramLayout layout)
    {
        Key = parent.Key;
        Route = parent.Route;
        Method = parent.Method;
        Status = parent.Status;
        StatusCode = parent.StatusCode;
        Scheme = parent.Scheme;
        Protocol = parent.Protocol;
        ErrorType = parent.ErrorType;
        Unhandled = parent.Unhandled;
        Duration = new PerCpuHistogram(layout);
    }

    public int Key { get; }

    /// <summary>The <c>http.route</c> value, or null for none.</summary>
    public string? Route { get; }

    public string Method { get; }

    public string Status { get; }

    /// <summary>The <c>http.response.status_code</c> attribute: the code as an int, or <c>_OTHER</c> outside 100-599.</summary>
    public object StatusCode { get; }

    public string Scheme { get; }

    public string Protocol { get; }

    public string? ErrorType { get; }

    public bool IsOverflow { get; }

    /// <summary>A request no one handled: <c>aspnetcore.request.is_unhandled="true"</c>.</summary>
    public bool Unhandled { get; }

    /// <summary>This series' custom request tags as exposed (keys sorted), for a series that has them.</summary>
    public MetricLabels? CustomTags { get; private set; }

    public PerCpuHistogram Duration { get; }

    /// <summary>The label set, built once: every writer reuses it (and its cached Prometheus text).</summary>
    public MetricLabels SeriesLabels => field ??= Exposition.SeriesLabels(this);

    /// <summary>
    /// The series of these labels plus <paramref name="tags"/> (custom request tags, none of PerCpu's own keys), created
    /// within the store's series cap; past the cap, the store's overflow series. A tag value whose <c>ToString()</c>
    /// throws is counted as a recording failure and the request recorded here, without its custom tags.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)] // only requests that add tags come here
    public RequestSeries WithTags(ReadOnlySpan<KeyValuePair<string, object?>> tags, HttpMetricsStore store)
    {
        TagSeriesTable<RequestSeries> table = Volatile.Read(ref _tagged) ?? CreateTagged(store);
        try
        {
            RequestSeries series = table.Find(tags);
            return table.IsOverflow(series) ? store.OverflowSeries : series;
        }
        catch (Exception ex)
        {
            store.CountRecordingFailure(ex);
            return this;
        }
    }

    /// <summary>The series with custom tags recorded with these labels, in creation order (each with its tags set).</summary>
    public IEnumerable<RequestSeries> TaggedSeries()
    {
        TagSeriesTable<RequestSeries>? table = Volatile.Read(ref _tagged);
        if (table is null)
        {
            yield break;
        }

        // Indexes, not the table's walk (a ref struct cannot live across yield): each step reads the published prefix.
        for (int i = 0; ; i++)
        {
            (MetricLabels Labels, RequestSeries Series)? at = table.At(i);
            if (at is not (MetricLabels labels, RequestSeries series))
            {
                yield break;
            }

            series.CustomTags ??= labels;
            yield return series;
        }
    }

    private TagSeriesTable<RequestSeries> CreateTagged(HttpMetricsStore store)
    {
        HistogramLayout layout = store.Layout;
        var table = new TagSeriesTable<RequestSeries>(int.MaxValue, () => new RequestSeries(this, layout), store.Options.MaxLabelValueLength, store.CountTruncatedLabelValue, budget: store);
        return Interlocked.CompareExchange(ref _tagged, table, null) ?? table;
    }
}
