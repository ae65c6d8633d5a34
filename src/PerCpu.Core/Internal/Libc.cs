using System.Runtime.InteropServices;

namespace PerCpu.Internal;

/// <summary>glibc entry points used by the CPU-id ladder. Every caller guards with <see cref="OperatingSystem.IsLinux"/> and catches load failures.</summary>
internal static unsafe partial class Libc
{
    private const string LibraryName = "libc.so.6";

    public const int ProtRead = 1;
    public const int ProtWrite = 2;
    public const int ProtExec = 4;
    public const int MapPrivate = 0x02;
    public const int MapAnonymous = 0x20;

    /// <summary><c>AT_RSEQ_FEATURE_SIZE</c>: how many bytes of <c>struct rseq</c> the kernel fills in.</summary>
    public const nuint AtRseqFeatureSize = 27;

    // Tiny, non-blocking, no callbacks into managed code: safe without a GC transition.
    [LibraryImport(LibraryName, EntryPoint = "sched_getcpu")]
    [SuppressGCTransition]
    public static partial int SchedGetCpu();

    // On x86-64 glibc the thread pointer (the %fs base) is the pthread_t itself.
    [LibraryImport(LibraryName, EntryPoint = "pthread_self")]
    [SuppressGCTransition]
    public static partial nint PthreadSelf();

    [LibraryImport(LibraryName, EntryPoint = "sched_getaffinity", SetLastError = true)]
    public static partial int SchedGetAffinity(int pid, nuint size, byte* mask);

    [LibraryImport(LibraryName, EntryPoint = "sched_setaffinity", SetLastError = true)]
    public static partial int SchedSetAffinity(int pid, nuint size, byte* mask);

    [LibraryImport(LibraryName, EntryPoint = "getauxval")]
    public static partial nuint GetAuxVal(nuint type);

    [LibraryImport(LibraryName, EntryPoint = "mmap", SetLastError = true)]
    public static partial nint Mmap(nint address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport(LibraryName, EntryPoint = "mprotect", SetLastError = true)]
    public static partial int Mprotect(nint address, nuint length, int protection);

    [LibraryImport(LibraryName, EntryPoint = "munmap")]
    public static partial int Munmap(nint address, nuint length);

    /// <summary>Reads an exported data symbol of glibc, such as <c>__rseq_offset</c>.</summary>
    public static bool TryGetExport(string name, out nint address)
    {
        address = 0;
        return NativeLibrary.TryLoad(LibraryName, out nint handle) && NativeLibrary.TryGetExport(handle, name, out address);
    }
}
