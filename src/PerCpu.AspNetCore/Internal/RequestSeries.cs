namespace PerCpu.AspNetCore.Internal;

/// <summary>One label combination of <c>http.server.request.duration</c>: its labels and its per-CPU histogram.</summary>
internal sealed class RequestSeries(int key, string route, int method, int status, int scheme, int protocol, string? errorType, bool isOverflow, HistogramLayout layout)
{
    public int Key { get; } = key;

    public string Route { get; } = route;

    public string Method { get; } = Labels.Methods[method];

    public string Status { get; } = Labels.Statuses[status];

    /// <summary>The <c>http.response.status_code</c> attribute: the code as an int, or <c>_OTHER</c> outside 100-599.</summary>
    public object StatusCode { get; } = status == Labels.StatusOther ? Labels.Other : 100 + status;

    public string Scheme { get; } = Labels.Schemes[scheme];

    public string Protocol { get; } = Labels.Protocols[protocol];

    public string? ErrorType { get; } = errorType;

    public bool IsOverflow { get; } = isOverflow;

    public PerCpuHistogram Duration { get; } = new(layout);

    /// <summary>The label set, built once: every writer reuses it (and its cached Prometheus text).</summary>
    public PerCpu.Families.MetricLabels SeriesLabels => field ??= Exposition.SeriesLabels(this);
}
