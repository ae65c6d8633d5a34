namespace PerCpu.Families;

/// <summary>The kind of a metric family, as OpenTelemetry and Prometheus both understand it.</summary>
public enum MetricType
{
    /// <summary>A monotonic sum (Prometheus <c>counter</c>, <c>_total</c>; OTLP monotonic <c>Sum</c>).</summary>
    Counter,

    /// <summary>A sum that goes up and down (Prometheus <c>gauge</c>; OTLP non-monotonic <c>Sum</c>).</summary>
    UpDownCounter,

    /// <summary>A last value (Prometheus <c>gauge</c>; OTLP <c>Gauge</c>).</summary>
    Gauge,

    /// <summary>A distribution (Prometheus <c>histogram</c>; OTLP <c>Histogram</c> or <c>ExponentialHistogram</c>).</summary>
    Histogram,
}
