namespace PerCpu.Families;

/// <summary>
/// What every writer (Prometheus text, OpenMetrics, OTLP, a test's collector) implements: producers call
/// <see cref="BeginFamily"/>, then the points of that family, for each family they hold. A writer knows nothing about
/// where the points come from. Calls arrive from one thread at a time.
/// </summary>
public interface IMetricsWriter
{
    /// <summary>Starts a family; the points that follow belong to it.</summary>
    /// <param name="descriptor">The family.</param>
    void BeginFamily(MetricDescriptor descriptor);

    /// <summary>A point of a counter, up-down counter or gauge.</summary>
    /// <param name="labels">The series' labels.</param>
    /// <param name="value">The value (cumulative for counters).</param>
    void WritePoint(MetricLabels labels, double value);

    /// <summary>A point of an integer counter, up-down counter or gauge.</summary>
    /// <param name="labels">The series' labels.</param>
    /// <param name="value">The value (cumulative for counters).</param>
    void WritePoint(MetricLabels labels, long value);

    /// <summary>A histogram point; the writer reads what its format needs (classic buckets without allocating, or a snapshot).</summary>
    /// <param name="labels">The series' labels.</param>
    /// <param name="histogram">The histogram.</param>
    void WriteHistogram(MetricLabels labels, PerCpuHistogram histogram);

    /// <summary>Invalid measurements a producer counted and left out (NaN, infinities, negative counter adds).</summary>
    /// <param name="count">How many.</param>
    void AddInvalid(long count);
}

/// <summary>Something that holds metric families and writes them on request (at scrape or export time).</summary>
public interface IMetricsProducer
{
    /// <summary>Writes every family and point held now.</summary>
    /// <param name="writer">The writer.</param>
    void Collect(IMetricsWriter writer);
}
