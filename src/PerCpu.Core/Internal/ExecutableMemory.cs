using System.Runtime.InteropServices;

namespace PerCpu.Internal;

/// <summary>
/// One page of machine code, mapped W^X: writable (not executable) while <c>fill</c> writes it, then read+execute (never
/// writable again). Used for the RDPID/RDTSCP stubs and the rseq write stubs.
/// </summary>
internal static unsafe class ExecutableMemory
{
    /// <summary>Fills the page; <paramref name="address"/> is where it will execute (for absolute addresses in data).</summary>
    public delegate void Fill(Span<byte> page, nint address);

    /// <summary>Maps, fills and seals one page; returns its address, or 0 with the reason.</summary>
    public static nint Create(Fill fill, out string? refusal)
    {
        nuint length = (nuint)Environment.SystemPageSize;
        nint page = Libc.Mmap(0, length, Libc.ProtRead | Libc.ProtWrite, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
        if (page == -1)
        {
            refusal = $"mmap failed (errno {Marshal.GetLastPInvokeError()})";
            return 0;
        }

        fill(new Span<byte>((void*)page, (int)length), page);
        if (Libc.Mprotect(page, length, Libc.ProtRead | Libc.ProtExec) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            _ = Libc.Munmap(page, length);
            refusal = $"mprotect(PROT_EXEC) refused (errno {errno}; SELinux execmem or a hardened runtime)";
            return 0;
        }

        refusal = null;
        return page;
    }
}
