using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;

namespace PerCpu.AspNetCore.Otlp;

/// <summary>
/// OTLP/gRPC's unary <c>MetricsService/Export</c> call on <see cref="HttpClient"/> over HTTP/2: the length-prefixed
/// message, the <c>grpc-*</c> headers, and the status from the trailers (or a trailers-only answer), with the delay of a
/// <c>google.rpc.RetryInfo</c> in <c>grpc-status-details-bin</c>. The request body is PerCpu's own OTLP encoding; no
/// gRPC library is needed for one unary call.
/// </summary>
internal static class OtlpGrpc
{
    /// <summary>The method's path, from <c>opentelemetry/proto/collector/metrics/v1/metrics_service.proto</c>.</summary>
    public const string ExportPath = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

    /// <summary>The largest answer body read to reach the trailers (an <c>ExportMetricsServiceResponse</c> is tiny).</summary>
    private const int MaxAnswerBytes = 64 * 1024;

    /// <summary>gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).</summary>
    public enum Code
    {
        Ok = 0,
        Cancelled = 1,
        Unknown = 2,
        DeadlineExceeded = 4,
        ResourceExhausted = 8,
        Aborted = 10,
        OutOfRange = 11,
        Unavailable = 14,
        DataLoss = 15,
    }

    /// <summary>The call's URI: the endpoint's scheme, host and port, and the method's path.</summary>
    public static Uri ExportUri(Uri endpoint) => new(endpoint.GetLeftPart(UriPartial.Authority) + ExportPath);

    /// <summary>
    /// Whether OTLP's specification lets a client retry <paramref name="code"/>: <c>CANCELLED</c>,
    /// <c>DEADLINE_EXCEEDED</c>, <c>ABORTED</c>, <c>OUT_OF_RANGE</c>, <c>UNAVAILABLE</c>, <c>DATA_LOSS</c>, and
    /// <c>RESOURCE_EXHAUSTED</c> only when the server says when to come back (<c>RetryInfo</c>).
    /// </summary>
    public static bool IsRetryable(int code, bool hasRetryInfo) => (Code)code switch
    {
        Code.Cancelled or Code.DeadlineExceeded or Code.Aborted or Code.OutOfRange or Code.Unavailable or Code.DataLoss => true,
        Code.ResourceExhausted => hasRetryInfo,
        _ => false,
    };

    /// <summary>A gRPC request carrying <paramref name="message"/> (gzipped already when <paramref name="gzip"/>).</summary>
    public static HttpRequestMessage Request(Uri uri, byte[] message, bool gzip, TimeSpan left)
    {
        byte[] framed = new byte[5 + message.Length];
        framed[0] = gzip ? (byte)1 : (byte)0; // the compressed flag
        BinaryPrimitives.WriteUInt32BigEndian(framed.AsSpan(1), (uint)message.Length);
        message.CopyTo(framed, 5);
        var request = new HttpRequestMessage(HttpMethod.Post, uri)
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact, // HTTP/2 with prior knowledge on http://, as gRPC needs
            Content = new ByteArrayContent(framed),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.TryAddWithoutValidation("te", "trailers");
        request.Headers.TryAddWithoutValidation("grpc-timeout", Timeout(left));
        if (gzip)
        {
            request.Headers.TryAddWithoutValidation("grpc-encoding", "gzip");
        }

        return request;
    }

    /// <summary>The <c>grpc-timeout</c> value: the time left, in whole milliseconds (at most 8 digits, else seconds).</summary>
    public static string Timeout(TimeSpan left)
    {
        long ms = Math.Max(1, (long)Math.Ceiling(left.TotalMilliseconds));
        return ms <= 99_999_999 ? ms.ToString(CultureInfo.InvariantCulture) + "m" : Math.Min(99_999_999, (ms + 999) / 1000).ToString(CultureInfo.InvariantCulture) + "S";
    }

    /// <summary>
    /// The call's status: <c>grpc-status</c> from a trailers-only answer's headers, else from the trailers after the body
    /// (read up to <see cref="MaxAnswerBytes"/>, then dropped); no status at all is <c>UNKNOWN</c>.
    /// </summary>
    public static async Task<(int Code, string? Message, TimeSpan? RetryDelay)> StatusAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        if (!TryStatus(response.Headers, out (int, string?, TimeSpan?) status))
        {
            Stream body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            await using (body.ConfigureAwait(false))
            {
                byte[] buffer = new byte[4096];
                for (int total = 0, n; total < MaxAnswerBytes && (n = await body.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0; total += n)
                {
                }
            }

            if (!TryStatus(response.TrailingHeaders, out status))
            {
                return ((int)Code.Unknown, "the answer carries no grpc-status", null);
            }
        }

        return status;
    }

    private static bool TryStatus(HttpHeaders headers, out (int Code, string? Message, TimeSpan? RetryDelay) status)
    {
        status = default;
        if (!headers.TryGetValues("grpc-status", out IEnumerable<string>? values)
            || !int.TryParse(values.FirstOrDefault(), NumberStyles.None, CultureInfo.InvariantCulture, out int code))
        {
            return false;
        }

        string? message = headers.TryGetValues("grpc-message", out IEnumerable<string>? m) ? Uri.UnescapeDataString(m.First()) : null;
        TimeSpan? delay = headers.TryGetValues("grpc-status-details-bin", out IEnumerable<string>? d) ? RetryDelay(d.First()) : null;
        status = (code, message, delay);
        return true;
    }

    /// <summary>
    /// The <c>retry_delay</c> of a <c>google.rpc.RetryInfo</c> among the details of the base64 <c>google.rpc.Status</c>
    /// (<c>details</c> = 3, each an <c>Any</c> with <c>type_url</c> = 1 and <c>value</c> = 2; <c>RetryInfo.retry_delay</c> = 1,
    /// a <c>Duration</c> of <c>seconds</c> = 1 and <c>nanos</c> = 2). Null when absent or malformed.
    /// </summary>
    internal static TimeSpan? RetryDelay(string base64)
    {
        try
        {
            string padded = base64.Trim().PadRight((base64.Trim().Length + 3) / 4 * 4, '=');
            ReadOnlySpan<byte> status = Convert.FromBase64String(padded);
            foreach ((int field, byte[] any) in Fields(status))
            {
                if (field != 3)
                {
                    continue;
                }

                string? type = null;
                byte[] value = [];
                foreach ((int f, byte[] bytes) in Fields(any))
                {
                    if (f == 1)
                    {
                        type = System.Text.Encoding.UTF8.GetString(bytes);
                    }
                    else if (f == 2)
                    {
                        value = bytes;
                    }
                }

                if (type?.EndsWith("/google.rpc.RetryInfo", StringComparison.Ordinal) != true)
                {
                    continue;
                }

                foreach ((int f, byte[] duration) in Fields(value))
                {
                    if (f == 1)
                    {
                        long seconds = 0, nanos = 0;
                        for (int i = 0; i < duration.Length;)
                        {
                            ulong key = Varint(duration, ref i);
                            ulong number = Varint(duration, ref i); // both Duration fields are varints
                            if (key >> 3 == 1)
                            {
                                seconds = (long)number;
                            }
                            else if (key >> 3 == 2)
                            {
                                nanos = (int)number;
                            }
                        }

                        return seconds < 0 || nanos < 0 ? null : TimeSpan.FromSeconds(Math.Min(seconds, 86_400)) + TimeSpan.FromTicks(nanos / 100);
                    }
                }
            }
        }
        catch (FormatException)
        {
        }
        catch (IndexOutOfRangeException)
        {
        }

        return null;
    }

    /// <summary>The length-delimited fields of a message (other wire types skipped).</summary>
    private static List<(int Field, byte[] Bytes)> Fields(ReadOnlySpan<byte> message)
    {
        var fields = new List<(int, byte[])>();
        for (int i = 0; i < message.Length;)
        {
            ulong key = Varint(message, ref i);
            switch ((int)(key & 7))
            {
                case 0:
                    Varint(message, ref i);
                    break;
                case 1:
                    i += 8;
                    break;
                case 2:
                    int length = checked((int)Varint(message, ref i));
                    fields.Add(((int)(key >> 3), message.Slice(i, length).ToArray()));
                    i += length;
                    break;
                case 5:
                    i += 4;
                    break;
                default:
                    throw new FormatException("unsupported wire type");
            }
        }

        return fields;
    }

    private static ulong Varint(ReadOnlySpan<byte> data, ref int i)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            byte b = data[i++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }

        throw new FormatException("varint too long");
    }
}
