namespace PerCpu.AspNetCore;

/// <summary>
/// Endpoint metadata that leaves an endpoint out of PerCpu's request metrics. Put it on a controller or action, or add it
/// with <c>.ExcludeFromPerCpuMetrics()</c>. ASP.NET Core's own <c>[DisableHttpMetrics]</c> / <c>.DisableHttpMetrics()</c> is
/// honoured as well.
/// </summary>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Method, AllowMultiple = false, Inherited = true)]
public sealed class ExcludeFromPerCpuMetricsAttribute : Attribute
{
}
