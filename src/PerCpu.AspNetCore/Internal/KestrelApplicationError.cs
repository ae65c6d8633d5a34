using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Http;

namespace PerCpu.AspNetCore.Internal;

/// <summary>
/// Whether Kestrel passed an exception on to the hosting layer as the application's error, which is what names
/// <c>error.type</c> in ASP.NET Core's own <c>http.server.request.duration</c>. Kestrel keeps it in its request's
/// <c>_applicationException</c>; a cancellation or an I/O error that escapes once the connection is aborted is logged as
/// the client going away and never stored there. Whether the connection was aborted at that moment is Kestrel's own
/// state, set a moment before <see cref="HttpContext.RequestAborted"/> fires, so PerCpu reads the outcome (when the
/// response completes, before the hosting layer records) rather than guessing it from the token.
/// </summary>
/// <remarks>
/// Read only on the exception path, through an <see cref="UnsafeAccessorAttribute"/> (no reflection, trimming-safe),
/// after checking that the feature collection is Kestrel's request. Elsewhere (another server, a Kestrel whose field is
/// gone) the rule Kestrel applies is used with the token: a cancellation or an I/O error of a request whose
/// <see cref="HttpContext.RequestAborted"/> fired names no error.
/// </remarks>
internal static class KestrelApplicationError
{
    private const string HttpProtocolTypeName = "Microsoft.AspNetCore.Server.Kestrel.Core.Internal.Http.HttpProtocol, Microsoft.AspNetCore.Server.Kestrel.Core";

    private static readonly Type? s_httpProtocol = LoadHttpProtocol();
    private static bool s_accessorBroken;

    /// <summary>Whether Kestrel took <paramref name="exception"/> for the client going away (no error.type).</summary>
    public static bool TookAsClientGone(HttpContext context, Exception exception)
    {
        if (exception is not (OperationCanceledException or IOException))
        {
            return false; // always the application's error
        }

        object features = context.Features;
        if (s_httpProtocol is { } protocol && !Volatile.Read(ref s_accessorBroken) && protocol.IsInstanceOfType(features))
        {
            try
            {
                return ApplicationException(features) is null;
            }
            catch (Exception ex) when (ex is MissingFieldException or MissingMemberException or TypeLoadException)
            {
                Volatile.Write(ref s_accessorBroken, true); // another Kestrel: the token's answer from now on
            }
        }

        return context.RequestAborted.IsCancellationRequested;
    }

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_applicationException")]
    private static extern ref Exception? ApplicationException([UnsafeAccessorType(HttpProtocolTypeName)] object protocol);

    [UnconditionalSuppressMessage("Trimming", "IL2057", Justification = "A literal type name; when trimmed away, the token rule applies.")]
    private static Type? LoadHttpProtocol()
    {
        try
        {
            return Type.GetType(HttpProtocolTypeName, throwOnError: false);
        }
        catch (Exception ex) when (ex is FileNotFoundException or FileLoadException or BadImageFormatException)
        {
            return null;
        }
    }
}
