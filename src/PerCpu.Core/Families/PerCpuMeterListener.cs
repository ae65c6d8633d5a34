using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Numerics;
using System.Runtime.CompilerServices;
using PerCpu.Internal;

namespace PerCpu.Families;

/// <summary>
/// Aggregates the standard Meter API (<see cref="Counter{T}"/>, <see cref="UpDownCounter{T}"/>, <see cref="Histogram{T}"/>,
/// <see cref="Gauge{T}"/> and the observable instruments) of the meters it is told to listen to into per-CPU shards, one
/// series per tag set, and writes them as families at collection time. Observable instruments are read when
/// <see cref="Collect"/> runs.
/// </summary>
/// <remarks>
/// <para><b>Writes</b> (the code calling <c>counter.Add(1, tags)</c>): the tag set is found in a lock-free table (no
/// allocation once the series exists), then the value goes to the current CPU's shard, as with
/// <see cref="PerCpuCounter"/>, <see cref="PerCpuUpDownCounter"/> and <see cref="PerCpuHistogram"/>. Never throws into
/// the caller: NaN or infinite sums and negative adds to a monotonic counter are counted as invalid and left out;
/// histograms count NaN, infinite and negative values as invalid.</para>
/// <para><b>Bounded</b>: each instrument holds at most <c>maxSeriesPerInstrument</c> tag sets; further ones are recorded
/// in one overflow series (<c>otel.metric.overflow="true"</c>), so totals stay exact and memory bounded.</para>
/// <para><b>Reads</b>: the same guarantee as the instruments: exact at quiescence, never losing a completed write.
/// Instruments from different <see cref="Meter"/> instances with the same name and definition (one per host in a test
/// process, say) share one family.</para>
/// </remarks>
public sealed class PerCpuMeterListener : IMetricsProducer, IDisposable
{
    private readonly MeterListener _listener;
    private readonly string[] _exact;
    private readonly string[] _prefixes;
    private readonly HashSet<string> _excluded;
    private readonly int _maxSeries;
    private readonly Func<string?, IReadOnlyList<double>?, HistogramLayout> _layouts;
    private readonly Lock _lock = new();
    private readonly Dictionary<MetricDescriptor, Aggregator> _byDescriptor = [];
    private readonly List<Aggregator> _ordered = [];
    private readonly Lock _collectLock = new();
    private readonly Action<string>? _warn;
    private readonly int _maxValueLength;
    private readonly TimeSpan _budget;
    private readonly Func<object?>? _localFactory;
    private CallbackWorker? _worker;
    private long _slowCallbacks;
    private long _truncated;
    private long _renamed;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<(string Instrument, string Rule), byte> _reported = new();
    private long _invalid;
    private long _callbackFailures;
    private long _dropped;
    private int _generation;

    /// <summary>Starts listening.</summary>
    /// <param name="meterNames">Meter names; a trailing <c>*</c> matches any name with that prefix (<c>Microsoft.AspNetCore.*</c>).</param>
    /// <param name="excludedMeters">Meter names never listened to, even when a pattern matches.</param>
    /// <param name="maxSeriesPerInstrument">Cap on tag sets per instrument. Default 2000.</param>
    /// <param name="layoutFor">The histogram layout for a unit and advised boundaries; default <see cref="MetricRegistry.LayoutFor"/>.</param>
    /// <param name="warn">Told once per instrument that is not aggregated, and why (an ASP.NET Core app logs it); may be null.</param>
    /// <param name="maxLabelValueLength">The longest tag value exposed (default 1024 characters, at least 16); a longer one
    /// is cut, its last character <c>…</c>, and counted in <see cref="TruncatedLabelValues"/>.</param>
    /// <param name="callbackBudget">How long a collection waits for the observable callbacks it starts (default 1 s): one
    /// still running after it is reported from its last completed values, counted in <see cref="SlowCallbacks"/> and told
    /// to <paramref name="warn"/>, and the collection goes on with the others.</param>
    public PerCpuMeterListener(IEnumerable<string> meterNames, IEnumerable<string>? excludedMeters = null, int maxSeriesPerInstrument = 2000, Func<string?, IReadOnlyList<double>?, HistogramLayout>? layoutFor = null, Action<string>? warn = null, int maxLabelValueLength = TagValues.DefaultMaxLength, TimeSpan? callbackBudget = null)
        : this(meterNames, excludedMeters, maxSeriesPerInstrument, layoutFor, warn, maxLabelValueLength, callbackBudget, localFactory: null)
    {
    }

    /// <summary>
    /// A listener of one host: <paramref name="localFactory"/> returns that host's <see cref="IMeterFactory"/> (null while
    /// there is none). A meter created by another <see cref="IMeterFactory"/> (another host in the same process: test
    /// servers, a second WebApplication) is not collected, as <c>MeterScope.Local</c> means in Microsoft.Extensions'
    /// metrics rules; a meter created with <c>new Meter(...)</c> (no factory) is process-wide and collected.
    /// </summary>
    internal PerCpuMeterListener(IEnumerable<string> meterNames, IEnumerable<string>? excludedMeters, int maxSeriesPerInstrument, Func<string?, IReadOnlyList<double>?, HistogramLayout>? layoutFor, Action<string>? warn, int maxLabelValueLength, TimeSpan? callbackBudget, Func<object?>? localFactory)
    {
        _localFactory = localFactory;
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLabelValueLength, 16);
        _budget = callbackBudget ?? TimeSpan.FromSeconds(1);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(_budget, TimeSpan.Zero, nameof(callbackBudget));
        _warn = warn;
        _maxValueLength = maxLabelValueLength;
        ArgumentNullException.ThrowIfNull(meterNames);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSeriesPerInstrument, 1);
        string[] names = [.. meterNames.Where(n => !string.IsNullOrWhiteSpace(n)).Select(n => n.Trim())];
        _exact = [.. names.Where(n => !n.EndsWith('*'))];
        _prefixes = [.. names.Where(n => n.EndsWith('*')).Select(n => n[..^1])];
        _excluded = new HashSet<string>(excludedMeters ?? [], StringComparer.OrdinalIgnoreCase);
        _maxSeries = maxSeriesPerInstrument;
        _layouts = layoutFor ?? MetricRegistry.LayoutFor;
        _listener = new MeterListener
        {
            InstrumentPublished = OnPublished,
            MeasurementsCompleted = OnCompleted,
        };
        SetCallbacks(_listener);
        _listener.Start();
    }

    /// <summary>The measurement callbacks every listener of this class uses: each measurement to its recorder.</summary>
    private static void SetCallbacks(MeterListener listener)
    {
        listener.SetMeasurementEventCallback<byte>(static (i, v, t, s) => RecordLong((Recorder)s!, v, t));
        listener.SetMeasurementEventCallback<short>(static (i, v, t, s) => RecordLong((Recorder)s!, v, t));
        listener.SetMeasurementEventCallback<int>(static (i, v, t, s) => RecordLong((Recorder)s!, v, t));
        listener.SetMeasurementEventCallback<long>(static (i, v, t, s) => RecordLong((Recorder)s!, v, t));
        listener.SetMeasurementEventCallback<float>(static (i, v, t, s) => RecordDouble((Recorder)s!, v, t));
        listener.SetMeasurementEventCallback<double>(static (i, v, t, s) => RecordDouble((Recorder)s!, v, t));
        listener.SetMeasurementEventCallback<decimal>(static (i, v, t, s) => RecordDouble((Recorder)s!, (double)v, t));
    }

    /// <summary>
    /// Observable callbacks that ran past the budget of a collection, or were still running when one began, counted
    /// once per collection: their series are reported from the values of their last completed run, and they are not
    /// started again until they return.
    /// </summary>
    public long SlowCallbacks => Volatile.Read(ref _slowCallbacks);

    /// <summary>Observable-instrument callbacks that threw during a collection (their series are left out of it).</summary>
    public long CallbackFailures => Volatile.Read(ref _callbackFailures);

    /// <summary>
    /// Instruments of listened meters that are not aggregated: a name outside OpenTelemetry's instrument name syntax
    /// (dropped, as the OpenTelemetry SDK drops it), each reported once to the <c>warn</c> callback.
    /// </summary>
    public long DroppedInstruments => Volatile.Read(ref _dropped);

    /// <summary>
    /// Series whose labels the Prometheus formats expose renamed (keys joined into one label, a histogram's <c>le</c>
    /// key as <c>_le</c>), counted once per series; each rule is told once per instrument to the <c>warn</c> callback.
    /// A <see cref="MetricRegistry"/> this listener produces for writes it as <c>percpu_labels_renamed_total</c>.
    /// </summary>
    public long RenamedLabelSets => Volatile.Read(ref _renamed);

    /// <summary>Series whose tag values were cut at the maximum length (counted once per series); a
    /// <see cref="MetricRegistry"/> this listener produces for writes it as <c>percpu_label_values_truncated_total</c>.</summary>
    public long TruncatedLabelValues => Volatile.Read(ref _truncated);

    /// <summary>Measurements counted as invalid and left out (NaN or infinite sums, negative adds to counters).</summary>
    public long InvalidMeasurements => Volatile.Read(ref _invalid);

    /// <summary>The instruments being aggregated, by definition.</summary>
    public IReadOnlyList<MetricDescriptor> Instruments
    {
        get
        {
            lock (_lock)
            {
                return [.. _ordered.Select(a => a.Descriptor)];
            }
        }
    }

    /// <summary>Whether a meter of this name is listened to.</summary>
    /// <param name="meterName">The meter's name.</param>
    /// <returns>True when a pattern matches and the name is not excluded.</returns>
    public bool Listens(string meterName)
    {
        ArgumentNullException.ThrowIfNull(meterName);
        if (_excluded.Contains(meterName))
        {
            return false;
        }

        foreach (string e in _exact)
        {
            if (string.Equals(e, meterName, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        foreach (string p in _prefixes)
        {
            if (meterName.StartsWith(p, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Reads the observable instruments, then writes every instrument's family.</summary>
    /// <param name="writer">The writer.</param>
    public void Collect(IMetricsWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        lock (_collectLock)
        {
            Volatile.Write(ref _generation, _generation + 1);
            Aggregator[] all;
            lock (_lock)
            {
                all = [.. _ordered];
            }

            RunCallbacks(all.OfType<ObservableAggregator>(), _generation);

            foreach (Aggregator a in all)
            {
                a.Write(writer);
            }

            writer.AddInvalid(InvalidMeasurements);
        }
    }

    /// <summary>Stops listening.</summary>
    public void Dispose()
    {
        _listener.Dispose();
        lock (_collectLock)
        {
            _worker?.Retire();
            _worker = null;
        }

        lock (_lock)
        {
            foreach (ObservableAggregator a in _ordered.OfType<ObservableAggregator>())
            {
                a.Dispose();
            }
        }
    }

    /// <summary>
    /// Runs the observable callbacks of this collection on a worker thread, waiting for them at most the budget: one
    /// still running then is left to finish (its series keep their last completed values), the worker that runs it is
    /// retired, and a new one runs the callbacks that had not started. A callback still running from an earlier
    /// collection is not started again. Called under the collect lock.
    /// </summary>
    private void RunCallbacks(IEnumerable<ObservableAggregator> observables, int generation)
    {
        List<ObservableAggregator> batch = [];
        foreach (ObservableAggregator a in observables)
        {
            if (a.TryClaim(generation))
            {
                batch.Add(a);
            }
            else
            {
                Interlocked.Increment(ref _slowCallbacks); // still running from an earlier collection
            }
        }

        while (batch.Count > 0)
        {
            _worker ??= new CallbackWorker();
            foreach (ObservableAggregator a in batch)
            {
                _worker.Post(a);
            }

            long deadline = Environment.TickCount64 + (long)_budget.TotalMilliseconds;
            if (batch.All(a => a.WaitIdle(TimeSpan.FromMilliseconds(Math.Max(0, deadline - Environment.TickCount64)))))
            {
                return;
            }

            // One callback is stuck on the worker: leave it there, retire that worker, run the rest on a new one.
            CallbackWorker stuck = _worker;
            _worker = null;
            stuck.Retire();
            if (stuck.Current is { } slow)
            {
                Interlocked.Increment(ref _slowCallbacks);
                Warn($"PerCpu: an observable callback of '{slow.Descriptor.Name}' has run for more than {_budget.TotalSeconds:0.###} s; its series keep their last completed values, and it is not started again until it returns.");
            }

            batch = stuck.TakeRemaining();
        }
    }

    private void Warn(string message)
    {
        try
        {
            _warn?.Invoke(message);
        }
        catch (Exception)
        {
            // the app's logger must not break a collection
        }
    }

    private void OnPublished(Instrument instrument, MeterListener listener)
    {
        if (!Listens(instrument.Meter.Name))
        {
            return;
        }

        if (instrument.Meter.Scope is IMeterFactory factory && _localFactory?.Invoke() is { } local && !ReferenceEquals(factory, local))
        {
            return; // another host's meter (its own IMeterFactory): that host's listener collects it
        }

        MetricType? type = instrument switch
        {
            _ when IsGeneric(instrument, typeof(Counter<>)) || IsGeneric(instrument, typeof(ObservableCounter<>)) => MetricType.Counter,
            _ when IsGeneric(instrument, typeof(UpDownCounter<>)) || IsGeneric(instrument, typeof(ObservableUpDownCounter<>)) => MetricType.UpDownCounter,
            _ when IsGeneric(instrument, typeof(Histogram<>)) => MetricType.Histogram,
            _ when IsGeneric(instrument, typeof(Gauge<>)) || IsGeneric(instrument, typeof(ObservableGauge<>)) => MetricType.Gauge,
            _ => null,
        };
        if (type is null)
        {
            return;
        }

        MetricDescriptor descriptor;
        try
        {
            descriptor = new MetricDescriptor(instrument.Name, type.Value, instrument.Unit, instrument.Description);
        }
        catch (ArgumentException ex)
        {
            // A name outside OpenTelemetry's syntax: dropped, as the OpenTelemetry SDK drops it, but never silently.
            Interlocked.Increment(ref _dropped);
            Warn($"PerCpu: instrument '{instrument.Name}' of meter '{instrument.Meter.Name}' is not collected: {ex.Message}");
            return;
        }

        bool integer = instrument.GetType().GetGenericArguments() is [Type t] && (t == typeof(byte) || t == typeof(short) || t == typeof(int) || t == typeof(long));
        Recorder recorder;
        lock (_lock)
        {
            if (!_byDescriptor.TryGetValue(descriptor, out Aggregator? aggregator))
            {
                aggregator = instrument.IsObservable
                    ? new ObservableAggregator(descriptor, _maxSeries, this, sums: type != MetricType.Gauge)
                    : type.Value switch
                    {
                        MetricType.Histogram => new HistogramAggregator(descriptor, _maxSeries, this, LayoutOf(instrument)),
                        MetricType.Gauge => new GaugeAggregator(descriptor, _maxSeries, this),
                        _ => new SumAggregator(descriptor, _maxSeries, this, monotonic: type == MetricType.Counter),
                    };
                _byDescriptor.Add(descriptor, aggregator);
                _ordered.Add(aggregator);
            }

            // Counter<long> and Counter<double> of one name each add exactly: integers into long cells, fractions into
            // double cells, one family summing both.
            recorder = aggregator is SumAggregator sum ? sum.PartFor(integer) : aggregator;
        }

        if (recorder is ObservableAggregator observable)
        {
            observable.Enable(instrument); // read by its own listener, under the collection's budget
            return;
        }

        listener.EnableMeasurementEvents(instrument, recorder);
    }

    private void OnCompleted(Instrument instrument, object? state)
    {
        // The family keeps its totals (another instance of the meter may still write to it, and a cumulative total never
        // goes back); nothing to release.
    }

    /// <summary>
    /// The layout for a histogram: from its advice when that makes a valid layout (increasing, within 2^±1000, not too
    /// many buckets), else without the advice. Never throws into the code that created the instrument.
    /// </summary>
    private HistogramLayout LayoutOf(Instrument instrument)
    {
        try
        {
            return _layouts(instrument.Unit, Advice(instrument));
        }
        catch (ArgumentException)
        {
            try
            {
                return _layouts(instrument.Unit, null);
            }
            catch (ArgumentException)
            {
                return MetricRegistry.LayoutFor(null, null);
            }
        }
    }

    private static bool IsGeneric(Instrument instrument, Type open) =>
        instrument.GetType().IsGenericType && instrument.GetType().GetGenericTypeDefinition() == open;

    private static IReadOnlyList<double>? Advice(Instrument instrument) => instrument switch
    {
        Histogram<double> h => h.Advice?.HistogramBucketBoundaries,
        Histogram<float> h => Convert(h.Advice?.HistogramBucketBoundaries),
        Histogram<long> h => Convert(h.Advice?.HistogramBucketBoundaries),
        Histogram<int> h => Convert(h.Advice?.HistogramBucketBoundaries),
        Histogram<short> h => Convert(h.Advice?.HistogramBucketBoundaries),
        Histogram<byte> h => Convert(h.Advice?.HistogramBucketBoundaries),
        Histogram<decimal> h => Convert(h.Advice?.HistogramBucketBoundaries),
        _ => null,
    };

    private static double[]? Convert<T>(IReadOnlyList<T>? values)
        where T : INumber<T> => values is null ? null : [.. values.Select(double.CreateChecked)];

    private void CountInvalid() => Interlocked.Increment(ref _invalid);

    private void CountCut() => Interlocked.Increment(ref _truncated);

    /// <summary>
    /// A new series whose labels the Prometheus formats cannot expose as given (keys that sanitize to one label name,
    /// joined with ';'; a histogram key that sanitizes to the reserved <c>le</c>, exposed as <c>_le</c>): counted, and
    /// told once per instrument and rule to the warn callback.
    /// </summary>
    private void CheckRenames(MetricDescriptor descriptor, MetricLabels labels)
    {
        bool histogram = descriptor.Type == MetricType.Histogram;
        IReadOnlyList<KeyValuePair<string, string>> exposed = Formats.PrometheusNaming.ExposedLabels(labels, histogram);
        bool joined = exposed.Count < labels.Count;
        bool reserved = histogram && labels.Names.Any(n => Formats.PrometheusNaming.SanitizeLabel(n) == "le");
        if (!joined && !reserved)
        {
            return;
        }

        Interlocked.Increment(ref _renamed);
        if (joined && _reported.TryAdd((descriptor.Name, "joined"), 0))
        {
            Warn($"PerCpu: instrument '{descriptor.Name}' has tag keys that become one Prometheus label name ({string.Join(", ", labels.Names)}); their values are joined with ';' in key order, as OpenTelemetry does. OTLP keeps the keys.");
        }

        if (reserved && _reported.TryAdd((descriptor.Name, "le"), 0))
        {
            Warn($"PerCpu: histogram '{descriptor.Name}' has a tag key that becomes 'le', which Prometheus reserves for bucket bounds; it is exposed as '_le'. OTLP keeps the key.");
        }
    }

    /// <summary>One measurement; a tag value whose <c>ToString()</c> throws makes it invalid, never the caller's exception.</summary>
    private static void RecordLong(Recorder recorder, long value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        try
        {
            recorder.RecordLong(value, tags);
        }
        catch (Exception)
        {
            recorder.Owner.CountInvalid();
        }
    }

    private static void RecordDouble(Recorder recorder, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        try
        {
            recorder.RecordDouble(value, tags);
        }
        catch (Exception)
        {
            recorder.Owner.CountInvalid();
        }
    }


    /// <summary>Where an instrument's measurements go (the state the listener passes back with each measurement).</summary>
    private abstract class Recorder(PerCpuMeterListener owner)
    {
        public PerCpuMeterListener Owner { get; } = owner;

        public abstract void RecordLong(long value, ReadOnlySpan<KeyValuePair<string, object?>> tags);

        public abstract void RecordDouble(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags);
    }

    /// <summary>One family: its series, written at collection.</summary>
    private abstract class Aggregator(MetricDescriptor descriptor, PerCpuMeterListener owner) : Recorder(owner)
    {
        public MetricDescriptor Descriptor { get; } = descriptor;

        public abstract void Write(IMetricsWriter writer);
    }

    /// <summary>
    /// A counter or up-down counter family. Integer instruments add into <see cref="PerCpuUpDownCounter"/> cells, floating
    /// ones into <see cref="PerCpuDouble"/> cells; where instruments of both kinds share the name, each tag set's point
    /// is the sum of both, so neither truncates the other.
    /// </summary>
    private sealed class SumAggregator(MetricDescriptor descriptor, int max, PerCpuMeterListener owner, bool monotonic) : Aggregator(descriptor, owner)
    {
        private LongPart? _long;
        private DoublePart? _double;

        /// <summary>The part an instrument writes to; called under the listener's lock.</summary>
        public Recorder PartFor(bool integer) => integer
            ? _long ??= new LongPart(Descriptor, max, Owner, monotonic)
            : _double ??= new DoublePart(Descriptor, max, Owner, monotonic);

        // Instruments record into a part (PartFor), never into the family itself.
        public override void RecordLong(long value, ReadOnlySpan<KeyValuePair<string, object?>> tags) =>
            throw new UnreachableException("instruments record into a part");

        public override void RecordDouble(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags) =>
            throw new UnreachableException("instruments record into a part");

        public override void Write(IMetricsWriter writer)
        {
            LongPart? longs = Volatile.Read(ref _long);
            DoublePart? doubles = Volatile.Read(ref _double);
            writer.BeginFamily(Descriptor);
            if (doubles is null)
            {
                if (longs is not null)
                {
                    foreach ((MetricLabels labels, PerCpuUpDownCounter c) in longs.Series.All())
                    {
                        writer.WritePoint(labels, longs.Read(c));
                    }
                }

                return;
            }

            if (longs is null)
            {
                foreach ((MetricLabels labels, PerCpuDouble c) in doubles.Series.All())
                {
                    writer.WritePoint(labels, c.Sum());
                }

                return;
            }

            // Both kinds (rare): join the two tables' series by their exposed labels.
            var fractions = new Dictionary<string, (MetricLabels Labels, double Value)>(StringComparer.Ordinal);
            foreach ((MetricLabels labels, PerCpuDouble c) in doubles.Series.All())
            {
                fractions[Key(labels)] = (labels, c.Sum());
            }

            foreach ((MetricLabels labels, PerCpuUpDownCounter c) in longs.Series.All())
            {
                string key = Key(labels);
                double fraction = fractions.Remove(key, out (MetricLabels Labels, double Value) f) ? f.Value : 0;
                writer.WritePoint(labels, longs.Read(c) + fraction);
            }

            foreach ((MetricLabels labels, double value) in fractions.Values)
            {
                writer.WritePoint(labels, value);
            }
        }

        private static string Key(MetricLabels labels) => string.Join('\u0001', labels.Names) + "\u0000" + string.Join('\u0001', labels.Values);

        private sealed class LongPart(MetricDescriptor descriptor, int max, PerCpuMeterListener owner, bool monotonic) : Recorder(owner)
        {
            public TagSeriesTable<PerCpuUpDownCounter> Series { get; } = new(max, static () => new PerCpuUpDownCounter(), owner._maxValueLength, owner.CountCut, l => owner.CheckRenames(descriptor, l));

            /// <summary>A point's value: a monotonic counter saturates at long.MaxValue, an up-down counter wraps as a sum does.</summary>
            public long Read(PerCpuUpDownCounter c) => monotonic ? c.SumSaturating() : c.Sum();

            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            public override void RecordLong(long value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
            {
                if (monotonic && value < 0)
                {
                    Owner.CountInvalid();
                    return;
                }

                Series.Find(tags).Add(value);
            }

            public override void RecordDouble(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags) =>
                throw new UnreachableException("integer instruments record longs");
        }

        private sealed class DoublePart(MetricDescriptor descriptor, int max, PerCpuMeterListener owner, bool monotonic) : Recorder(owner)
        {
            public TagSeriesTable<PerCpuDouble> Series { get; } = new(max, static () => new PerCpuDouble(), owner._maxValueLength, owner.CountCut, l => owner.CheckRenames(descriptor, l));

            public override void RecordLong(long value, ReadOnlySpan<KeyValuePair<string, object?>> tags) => RecordDouble(value, tags);

            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            public override void RecordDouble(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
            {
                if (!double.IsFinite(value) || (monotonic && value < 0))
                {
                    Owner.CountInvalid();
                    return;
                }

                Series.Find(tags).Add(value);
            }
        }
    }

    private sealed class HistogramAggregator(MetricDescriptor descriptor, int max, PerCpuMeterListener owner, HistogramLayout layout) : Aggregator(descriptor, owner)
    {
        private readonly TagSeriesTable<PerCpuHistogram> _series = new(max, () => new PerCpuHistogram(layout), owner._maxValueLength, owner.CountCut, l => owner.CheckRenames(descriptor, l));

        public override void RecordLong(long value, ReadOnlySpan<KeyValuePair<string, object?>> tags) => _series.Find(tags).Record(value);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public override void RecordDouble(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags) => _series.Find(tags).Record(value);

        public override void Write(IMetricsWriter writer)
        {
            writer.BeginFamily(Descriptor);
            foreach ((MetricLabels labels, PerCpuHistogram h) in _series.All())
            {
                writer.WriteHistogram(labels, h);
            }
        }
    }

    private sealed class GaugeAggregator(MetricDescriptor descriptor, int max, PerCpuMeterListener owner) : Aggregator(descriptor, owner)
    {
        private readonly TagSeriesTable<MetricGauge> _series = new(max, static () => new MetricGauge(), owner._maxValueLength, owner.CountCut, l => owner.CheckRenames(descriptor, l));

        public override void RecordLong(long value, ReadOnlySpan<KeyValuePair<string, object?>> tags) => _series.Find(tags).Set(value);

        public override void RecordDouble(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags) => _series.Find(tags).Set(value);

        public override void Write(IMetricsWriter writer)
        {
            writer.BeginFamily(Descriptor);
            foreach ((MetricLabels labels, MetricGauge g) in _series.All())
            {
                writer.WritePoint(labels, g.Value);
            }
        }
    }

    /// <summary>
    /// Observable instruments report their current value (a cumulative total for counters) when collected, each
    /// aggregator through a listener of its own, run by <see cref="RunCallbacks"/>. A run writes pending values; when
    /// it returns they become the reported ones, so a run that is late or stuck never leaves a scrape with half of its
    /// series. A tag set reported twice in one run keeps its last value, as OpenTelemetry does; the overflow series of
    /// a counter or up-down counter stands for many tag sets, so it sums what they report.
    /// </summary>
    private sealed class ObservableAggregator : Aggregator, IDisposable
    {
        private readonly TagSeriesTable<Observed> _series;
        private readonly bool _sums;
        private readonly MeterListener _probe = new();
        private readonly ManualResetEventSlim _idle = new(initialState: true);
        private readonly Lock _published = new();
        private int _running;
        private int _runGeneration;
        private int _doneGeneration;

        public ObservableAggregator(MetricDescriptor descriptor, int max, PerCpuMeterListener owner, bool sums)
            : base(descriptor, owner)
        {
            _series = new(max, static () => new Observed(), owner._maxValueLength, owner.CountCut, l => owner.CheckRenames(descriptor, l));
            _sums = sums;
            SetCallbacks(_probe);
        }

        /// <summary>Adds an instrument to this aggregator's listener (another meter instance of one definition, too).</summary>
        public void Enable(Instrument instrument) => _probe.EnableMeasurementEvents(instrument, this);

        /// <summary>Marks a run of <paramref name="generation"/> as started, unless the previous run still runs.</summary>
        public bool TryClaim(int generation)
        {
            if (Interlocked.CompareExchange(ref _running, 1, 0) != 0)
            {
                return false;
            }

            _idle.Reset();
            _runGeneration = generation;
            return true;
        }

        public bool WaitIdle(TimeSpan timeout) => _idle.Wait(timeout);

        /// <summary>Runs the callbacks (on the worker thread), then publishes what they reported.</summary>
        public void Run()
        {
            try
            {
                _probe.RecordObservableInstruments();
            }
            catch (AggregateException ex)
            {
                // A callback threw: what it reported is left out of this run (the others of the aggregator are kept).
                Interlocked.Add(ref Owner._callbackFailures, ex.InnerExceptions.Count);
            }
            catch (Exception)
            {
                Interlocked.Increment(ref Owner._callbackFailures);
            }

            lock (_published)
            {
                foreach ((MetricLabels _, Observed o) in _series.All())
                {
                    o.Publish(_runGeneration);
                }

                _doneGeneration = _runGeneration;
            }

            Volatile.Write(ref _running, 0);
            _idle.Set();
        }

        public override void RecordLong(long value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            Observed o = _series.Find(tags);
            o.Observe(value, _runGeneration, _sums && _series.IsOverflow(o));
        }

        public override void RecordDouble(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            Observed o = _series.Find(tags);
            o.Observe(value, _runGeneration, _sums && _series.IsOverflow(o));
        }

        public override void Write(IMetricsWriter writer)
        {
            writer.BeginFamily(Descriptor);
            lock (_published)
            {
                foreach ((MetricLabels labels, Observed o) in _series.All())
                {
                    if (_doneGeneration == 0 || o.DoneGeneration != _doneGeneration)
                    {
                        continue; // not reported by the last completed run: the series is gone for now
                    }

                    if (o.DoneIsLong)
                    {
                        writer.WritePoint(labels, o.DoneLong);
                    }
                    else
                    {
                        writer.WritePoint(labels, o.DoneDouble);
                    }
                }
            }
        }

        public void Dispose()
        {
            _probe.Dispose();
            _idle.Dispose();
        }
    }

    /// <summary>A dedicated background thread that runs observable callbacks, retired when one of them is stuck.</summary>
    private sealed class CallbackWorker
    {
        private readonly System.Collections.Concurrent.BlockingCollection<ObservableAggregator> _queue = [];

        public CallbackWorker() => new Thread(Loop) { IsBackground = true, Name = "PerCpu observable callbacks" }.Start();

        /// <summary>The aggregator whose callbacks run now, or null.</summary>
        public ObservableAggregator? Current { get; private set; }

        public void Post(ObservableAggregator aggregator) => _queue.Add(aggregator);

        /// <summary>No more work: the thread ends after the callback it runs, if any.</summary>
        public void Retire() => _queue.CompleteAdding();

        /// <summary>The aggregators posted but not started (after <see cref="Retire"/>).</summary>
        public List<ObservableAggregator> TakeRemaining()
        {
            List<ObservableAggregator> rest = [];
            while (_queue.TryTake(out ObservableAggregator? a))
            {
                rest.Add(a);
            }

            return rest;
        }

        private void Loop()
        {
            foreach (ObservableAggregator a in _queue.GetConsumingEnumerable())
            {
                Current = a;
                a.Run();
                Current = null;
            }

            _queue.Dispose();
        }
    }

    /// <summary>
    /// An observed value: pending (written by the run in progress, on the worker thread) and done (what the last
    /// completed run reported, read by collections under the aggregator's lock).
    /// </summary>
    private sealed class Observed
    {
        public int DoneGeneration;
        public bool DoneIsLong;
        public long DoneLong;
        public double DoneDouble;
        private int _generation;
        private bool _isLong;
        private long _long;
        private double _double;

        public void Observe(long value, int generation, bool add)
        {
            if (add && _generation == generation)
            {
                if (_isLong)
                {
                    _long += value;
                }
                else
                {
                    _double += value;
                }

                return;
            }

            _isLong = true;
            _long = value;
            _generation = generation;
        }

        public void Observe(double value, int generation, bool add)
        {
            if (add && _generation == generation)
            {
                _double = (_isLong ? _long : _double) + value;
            }
            else
            {
                _double = value;
                _generation = generation;
            }

            _isLong = false;
        }

        /// <summary>The run of <paramref name="generation"/> returned: what it reported becomes the reported value.</summary>
        public void Publish(int generation)
        {
            if (_generation == generation)
            {
                DoneGeneration = generation;
                DoneIsLong = _isLong;
                DoneLong = _long;
                DoneDouble = _double;
            }
        }
    }
}
