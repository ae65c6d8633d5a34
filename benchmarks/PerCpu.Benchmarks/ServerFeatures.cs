using System.Collections;
using Microsoft.AspNetCore.Hosting.Server.Abstractions;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.Features.Authentication;

namespace PerCpu.Benchmarks;

/// <summary>
/// A request's features held as a server holds them: typed slots for the features the pipeline reads on every request
/// (Kestrel's <c>HttpProtocol</c> keeps the same ones in fields), a short list for the rest, reset and reused for the
/// next request of the connection, and the hosting layer's per-request context kept with it
/// (<see cref="IHostContextContainer{TContext}"/>, as Kestrel does), so the harness charges no stack for dictionary
/// lookups or per-request allocations that no real server pays.
/// </summary>
internal sealed class ServerFeatures<TContext> : IFeatureCollection, IHostContextContainer<TContext>
    where TContext : notnull
{
    private static readonly Type[] s_slotTypes =
    [
        typeof(IHttpRequestFeature), typeof(IHttpResponseFeature), typeof(IHttpResponseBodyFeature), typeof(IRequestBodyPipeFeature),
        typeof(IHttpRequestIdentifierFeature), typeof(IServiceProvidersFeature), typeof(IHttpRequestLifetimeFeature),
        typeof(IHttpConnectionFeature), typeof(IHttpActivityFeature), typeof(IHttpMetricsTagsFeature), typeof(IItemsFeature),
        typeof(IQueryFeature), typeof(IFormFeature), typeof(IHttpAuthenticationFeature), typeof(IRouteValuesFeature),
        typeof(IEndpointFeature), typeof(IHttpBodyControlFeature), typeof(IHttpResponseTrailersFeature), typeof(IHttpMaxRequestBodySizeFeature),
    ];

    private readonly object?[] _slots = new object?[s_slotTypes.Length];
    private readonly List<KeyValuePair<Type, object>> _extra = [];
    private int _revision;

    public TContext? HostContext { get; set; }

    public bool IsReadOnly => false;

    public int Revision => _revision;

    public object? this[Type key]
    {
        get
        {
            int i = SlotOf(key);
            if (i >= 0)
            {
                return _slots[i];
            }

            foreach (KeyValuePair<Type, object> e in _extra)
            {
                if (e.Key == key)
                {
                    return e.Value;
                }
            }

            return null;
        }

        set
        {
            _revision++;
            int i = SlotOf(key);
            if (i >= 0)
            {
                _slots[i] = value;
                return;
            }

            for (int j = 0; j < _extra.Count; j++)
            {
                if (_extra[j].Key == key)
                {
                    if (value is null)
                    {
                        _extra.RemoveAt(j);
                    }
                    else
                    {
                        _extra[j] = new(key, value);
                    }

                    return;
                }
            }

            if (value is not null)
            {
                _extra.Add(new(key, value));
            }
        }
    }

    public TFeature? Get<TFeature>() => (TFeature?)(Slot<TFeature>.Index is int i and >= 0 ? _slots[i] : this[typeof(TFeature)]);

    public void Set<TFeature>(TFeature? instance)
    {
        if (Slot<TFeature>.Index is int i and >= 0)
        {
            _revision++;
            _slots[i] = instance;
        }
        else
        {
            this[typeof(TFeature)] = instance;
        }
    }

    /// <summary>
    /// The slot of a feature type: reference compares, as Kestrel's generated <c>if (key == typeof(...))</c> chain makes
    /// them (<c>Array.IndexOf</c> would call <c>Type.Equals</c> through a comparer for each slot, which no server pays).
    /// </summary>
    private static int SlotOf(Type key)
    {
        Type[] types = s_slotTypes;
        for (int i = 0; i < types.Length; i++)
        {
            if (ReferenceEquals(types[i], key))
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>The next request on this connection: every feature gone (the server sets its own again), as Kestrel resets its fields.</summary>
    public void Reset()
    {
        Array.Clear(_slots);
        _extra.Clear();
        _revision++;
    }

    public IEnumerator<KeyValuePair<Type, object>> GetEnumerator()
    {
        for (int i = 0; i < _slots.Length; i++)
        {
            if (_slots[i] is { } f)
            {
                yield return new(s_slotTypes[i], f);
            }
        }

        foreach (KeyValuePair<Type, object> e in _extra)
        {
            yield return e;
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    private static class Slot<T>
    {
        public static readonly int Index = Array.IndexOf(s_slotTypes, typeof(T));
    }
}
