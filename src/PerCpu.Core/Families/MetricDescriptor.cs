using System.Globalization;

namespace PerCpu.Families;

/// <summary>
/// What a metric family is: an OpenTelemetry-style instrument name (<c>shop.orders</c>), its unit (UCUM, <c>s</c>,
/// <c>By</c>, <c>{order}</c>), description, type and label names. Writers derive the Prometheus names from it
/// (<see cref="Formats.PrometheusNaming"/>). Two descriptors are equal when every part is equal.
/// </summary>
public sealed class MetricDescriptor : IEquatable<MetricDescriptor>
{
    /// <summary>Creates a descriptor; the name and label names are validated.</summary>
    /// <param name="name">Instrument name: a letter, then letters, digits, <c>_ . - /</c>; at most 255 characters.</param>
    /// <param name="type">The type.</param>
    /// <param name="unit">UCUM unit, or null.</param>
    /// <param name="description">Description (Prometheus <c># HELP</c>), or null.</param>
    /// <param name="labelNames">Label names (attribute keys); unique, not empty, not starting with <c>__</c>.</param>
    /// <exception cref="ArgumentException">A name is invalid; the message says which and why.</exception>
    public MetricDescriptor(string name, MetricType type, string? unit = null, string? description = null, IReadOnlyList<string>? labelNames = null)
    {
        ValidateName(name);
        Name = name;
        Type = type;
        Unit = string.IsNullOrEmpty(unit) ? null : unit;
        Description = string.IsNullOrEmpty(description) ? null : description;
        string[] labels = labelNames is null ? [] : [.. labelNames];
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string label in labels)
        {
            if (string.IsNullOrEmpty(label) || label.StartsWith("__", StringComparison.Ordinal) || label.Any(char.IsControl))
            {
                throw new ArgumentException($"Metric '{name}': label name '{label}' is invalid (empty, reserved '__' prefix, or control characters).", nameof(labelNames));
            }

            if (!seen.Add(label))
            {
                throw new ArgumentException($"Metric '{name}': label name '{label}' appears twice.", nameof(labelNames));
            }
        }

        LabelNames = labels;
    }

    /// <summary>The instrument name.</summary>
    public string Name { get; }

    /// <summary>The type.</summary>
    public MetricType Type { get; }

    /// <summary>The UCUM unit, or null.</summary>
    public string? Unit { get; }

    /// <summary>The description, or null.</summary>
    public string? Description { get; }

    /// <summary>The label names, in the order label values are given.</summary>
    public IReadOnlyList<string> LabelNames { get; }

    /// <summary>Prometheus names, computed once by the writers.</summary>
    internal Formats.PrometheusNames? PrometheusNames { get; set; }

    /// <summary>Throws unless <paramref name="name"/> follows OpenTelemetry's instrument name syntax.</summary>
    /// <param name="name">The name.</param>
    public static void ValidateName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name.Length is 0 or > 255 || !char.IsAsciiLetter(name[0]) || name.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '-' or '/')))
        {
            throw new ArgumentException($"Metric name '{name}' is invalid: it must start with a letter and hold only letters, digits, '_', '.', '-' and '/' (at most 255 characters).", nameof(name));
        }
    }

    /// <inheritdoc/>
    public bool Equals(MetricDescriptor? other) =>
        other is not null && Name == other.Name && Type == other.Type && Unit == other.Unit && Description == other.Description
        && LabelNames.SequenceEqual(other.LabelNames, StringComparer.Ordinal);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as MetricDescriptor);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Name, Type, Unit, Description, LabelNames.Count);

    /// <summary>The definition, as error messages name it.</summary>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Type} '{Name}' (unit '{Unit}', description '{Description}', labels [{string.Join(", ", LabelNames)}])");
}
