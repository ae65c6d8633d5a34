using System.Runtime.CompilerServices;

namespace PerCpu.Internal;

/// <summary>
/// <see cref="ProcessorIdStrategy.CachedCpuId"/>: the thread's CPU from <c>sched_getcpu</c>, asked once every
/// <see cref="RefreshEvery"/> reads and cached in thread statics in between. A class of its own with no static
/// constructor, so the JIT inlines the thread-static access.
/// </summary>
internal static class CachedCpuId
{
    /// <summary>Reads between two <c>sched_getcpu</c> calls on one thread.</summary>
    public const int RefreshEvery = 64;

    [ThreadStatic]
    private static int t_id;

    [ThreadStatic]
    private static int t_left;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Read()
    {
        int left = t_left;
        if (left > 0)
        {
            t_left = left - 1;
            return t_id;
        }

        return Refresh();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int Refresh()
    {
        int id = Libc.SchedGetCpu();
        id = id >= 0 ? id : Thread.GetCurrentProcessorId() & int.MaxValue;
        t_id = id;
        t_left = RefreshEvery - 1;
        return id;
    }
}
