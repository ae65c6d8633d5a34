using System.Diagnostics.Metrics;
using OpenTelemetry;
using OpenTelemetry.Metrics;

namespace PerCpu.Benchmarks;

/// <summary>
/// The peers as a service would run them: the OpenTelemetry SDK listening through a MeterProvider with a reader
/// (the collection interval is long, so export work stays out of the measurement), and prometheus-net's default
/// registry.
/// </summary>
internal sealed class OtelPeer : IDisposable
{
    private readonly MeterProvider _provider;

    public OtelPeer(string name, bool exponentialHistogram = false)
    {
        Meter = new Meter(name);
        var exported = new List<Metric>();
        MeterProviderBuilder builder = Sdk.CreateMeterProviderBuilder()
            .AddMeter(name)
            .AddReader(new PeriodicExportingMetricReader(new InMemoryNullExporter(), exportIntervalMilliseconds: 3_600_000));
        if (exponentialHistogram)
        {
            builder.AddView(i => i.GetType().Name.Contains("Histogram", StringComparison.Ordinal) ? new Base2ExponentialBucketHistogramConfiguration() : null);
        }

        _provider = builder.Build()!;
    }

    public Meter Meter { get; }

    public void Dispose()
    {
        _provider.Dispose();
        Meter.Dispose();
    }

    /// <summary>An exporter that drops batches: only the SDK's recording path is measured.</summary>
    private sealed class InMemoryNullExporter : BaseExporter<Metric>
    {
        public override ExportResult Export(in Batch<Metric> batch) => ExportResult.Success;
    }
}
