namespace PerCpu.Families;

/// <summary>
/// A last-value gauge (queue depth read from elsewhere, a temperature, a configuration value). Unlike the sums, a gauge
/// needs no per-CPU shards: the last <see cref="Set(double)"/> wins, and a read returns the value of one completed
/// <see cref="Set(double)"/> (never a torn one).
/// </summary>
public sealed class MetricGauge
{
    private long _bits;

    /// <summary>Sets the value.</summary>
    /// <param name="value">The value; NaN and infinities are stored as given and exposed as <c>NaN</c>/<c>+Inf</c>/<c>-Inf</c>.</param>
    public void Set(double value) => Volatile.Write(ref _bits, BitConverter.DoubleToInt64Bits(value));

    /// <summary>The last value set (0 before the first).</summary>
    public double Value => BitConverter.Int64BitsToDouble(Volatile.Read(ref _bits));
}
