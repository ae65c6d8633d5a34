namespace PerCpu.Internal;

/// <summary>Enum values from configuration text.</summary>
internal static class EnumNames
{
    /// <summary>
    /// A value by its name only (case-insensitive): <see cref="Enum.TryParse{TEnum}(string, bool, out TEnum)"/> also takes
    /// numbers (<c>42</c>, an undefined value) and comma lists (<c>A, B</c>, which it ORs into another value).
    /// </summary>
    public static bool TryParse<TEnum>(string text, out TEnum value)
        where TEnum : struct, Enum
    {
        foreach (TEnum candidate in Enum.GetValues<TEnum>())
        {
            if (string.Equals(candidate.ToString(), text, StringComparison.OrdinalIgnoreCase))
            {
                value = candidate;
                return true;
            }
        }

        value = default;
        return false;
    }
}
