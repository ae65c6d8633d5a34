namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// Request rates, per route and in total, computed away from the hot path: once a second (a <see cref="TimeProvider"/>
/// timer) it samples each route's cumulative request counter into a ring of per-second counts and updates 1/5/15-minute
/// exponentially weighted moving averages. A scrape reads the ring: the rate over the last W seconds is
/// <c>(count(now) − count(now − W)) / W</c>. Requests pay nothing for this.
/// </summary>
internal sealed class RateTracker : IDisposable
{
    private static readonly (string Label, double Alpha)[] s_ewmas =
    [
        ("1m", 1 - Math.Exp(-1.0 / 60)),
        ("5m", 1 - Math.Exp(-1.0 / 300)),
        ("15m", 1 - Math.Exp(-1.0 / 900)),
    ];

    private readonly HttpMetricsStore _store;
    private readonly TimeProvider _time;
    private readonly int[] _windows;
    private readonly int _ringSize;
    private readonly Lock _lock = new();
    private readonly Dictionary<EndpointMetrics, Ring> _routes = [];
    private readonly Ring _total;
    private ITimer? _timer;
    private long _lastSample;
    private bool _ticked;

    public RateTracker(HttpMetricsStore store, TimeProvider time, IList<int> windows)
    {
        _store = store;
        _time = time;
        _windows = [.. windows];
        _ringSize = _windows.Max() + 1;
        _total = new Ring(_ringSize, ewmaFromZero: false);
        _lastSample = time.GetTimestamp();
    }

    public IReadOnlyList<int> Windows => _windows;

    public static IReadOnlyList<string> EwmaLabels { get; } = s_ewmas.Select(e => e.Label).ToArray();

    public void Start() => _timer ??= _time.CreateTimer(static s => ((RateTracker)s!).Tick(), this, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));

    public void Dispose() => _timer?.Dispose();

    /// <summary>Takes the samples due since the last tick; whole seconds only, counts spread evenly over missed seconds.</summary>
    public void Tick()
    {
        lock (_lock)
        {
            long now = _time.GetTimestamp();
            int seconds = (int)Math.Min(_time.GetElapsedTime(_lastSample, now).TotalSeconds, _ringSize);
            if (seconds < 1)
            {
                return;
            }

            _lastSample += (long)(seconds * (double)_time.TimestampFrequency);
            long total = 0;
            foreach (EndpointMetrics route in _store.Endpoints())
            {
                if (route.Excluded)
                {
                    continue;
                }

                if (!_routes.TryGetValue(route, out Ring? ring))
                {
                    // A route that appears after the first tick starts its averages at 0, as if it had been there with
                    // no requests since the total's averages started: per-route averages then add up to the total.
                    _routes[route] = ring = new Ring(_ringSize, ewmaFromZero: _ticked);
                }

                long count = route.Requests.Sum();
                ring.Advance(count, seconds);
                total += count;
            }

            _total.Advance(total, seconds);
            _ticked = true;
        }
    }

    /// <summary>(endpoint handles or null for the total, window label, requests per second) for every route and window.</summary>
    public List<(EndpointMetrics? Route, string Window, double Rate)> Read()
    {
        var rates = new List<(EndpointMetrics?, string, double)>();
        lock (_lock)
        {
            Add(rates, null, _total);
            foreach ((EndpointMetrics route, Ring ring) in _routes)
            {
                Add(rates, route, ring);
            }
        }

        return rates;
    }

    private void Add(List<(EndpointMetrics?, string, double)> rates, EndpointMetrics? route, Ring ring)
    {
        foreach (int w in _windows)
        {
            rates.Add((route, w + "s", ring.Rate(w)));
        }

        for (int e = 0; e < s_ewmas.Length; e++)
        {
            rates.Add((route, "ewma_" + s_ewmas[e].Label, ring.Ewma[e]));
        }
    }

    /// <summary>Per-second cumulative counts and the EWMAs. <paramref name="ewmaFromZero"/> false: the averages start at the first second's rate.</summary>
    private sealed class Ring(int size, bool ewmaFromZero)
    {
        private readonly long[] _counts = new long[size]; // cumulative count at the end of each second; zeros before the first
        private int _head;
        private bool _ewmaStarted = ewmaFromZero;

        public double[] Ewma { get; } = new double[s_ewmas.Length];

        public void Advance(long count, int seconds)
        {
            long previous = _counts[_head];
            for (int s = 1; s <= seconds; s++)
            {
                _head = (_head + 1) % _counts.Length;
                long value = previous + ((count - previous) * s / seconds);
                double instant = value - _counts[(_head - 1 + _counts.Length) % _counts.Length];
                _counts[_head] = value;
                for (int e = 0; e < s_ewmas.Length; e++)
                {
                    Ewma[e] = _ewmaStarted ? Ewma[e] + (s_ewmas[e].Alpha * (instant - Ewma[e])) : instant;
                }

                _ewmaStarted = true;
            }
        }

        public double Rate(int window) =>
            (_counts[_head] - _counts[(_head - window + _counts.Length) % _counts.Length]) / (double)window;
    }
}
