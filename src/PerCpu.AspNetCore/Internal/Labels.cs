using System.Globalization;
using Microsoft.AspNetCore.Http;

namespace PerCpu.AspNetCore.Internal;

/// <summary>Fixed tables that turn per-request values into small indexes without string work or allocation.</summary>
internal static class Labels
{
    public const string Other = "_OTHER";

    // OpenTelemetry semantic conventions: the known methods; anything else is _OTHER.
    public static readonly string[] Methods = [Other, "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "QUERY"];

    public static readonly string[] Schemes = ["http", "https"];

    public static readonly string[] Protocols = [Other, "1.0", "1.1", "2", "3"];

    /// <summary>Status labels 100..599, then one bounded value for anything else.</summary>
    public static readonly string[] Statuses = [.. Enumerable.Range(100, 500).Select(c => c.ToString(CultureInfo.InvariantCulture)), Other];

    public const int StatusOther = 500;

    public static int Method(string method)
    {
        // Kestrel hands out the interned constants for known methods, so these are reference compares; other
        // strings fall back to a case-insensitive compare, still without allocating.
        if (HttpMethods.IsGet(method))
        {
            return 1;
        }

        if (HttpMethods.IsPost(method))
        {
            return 2;
        }

        if (HttpMethods.IsPut(method))
        {
            return 3;
        }

        if (HttpMethods.IsDelete(method))
        {
            return 4;
        }

        if (HttpMethods.IsHead(method))
        {
            return 5;
        }

        if (HttpMethods.IsOptions(method))
        {
            return 6;
        }

        if (HttpMethods.IsPatch(method))
        {
            return 7;
        }

        if (HttpMethods.IsTrace(method))
        {
            return 8;
        }

        if (HttpMethods.IsConnect(method))
        {
            return 9;
        }

        return HttpMethods.IsQuery(method) ? 10 : 0;
    }

    public static int Status(int code) => (uint)(code - 100) < 500 ? code - 100 : StatusOther;

    public static int Protocol(string protocol)
    {
        if (HttpProtocol.IsHttp11(protocol))
        {
            return 2;
        }

        if (HttpProtocol.IsHttp2(protocol))
        {
            return 3;
        }

        if (HttpProtocol.IsHttp3(protocol))
        {
            return 4;
        }

        return HttpProtocol.IsHttp10(protocol) ? 1 : 0;
    }
}
