using System.Globalization;
using System.Text;

namespace PerCpu;

/// <summary>What the startup ladder found for one <see cref="ProcessorIdStrategy"/>.</summary>
/// <param name="Strategy">The strategy.</param>
/// <param name="Available">Whether it was detected and passed validation on this machine.</param>
/// <param name="Detail">Why it is unavailable, or what was validated.</param>
/// <param name="NanosecondsPerCall">Best measured cost of one id read, or <see cref="double.NaN"/> when not measured.</param>
public sealed record ProcessorIdCandidate(ProcessorIdStrategy Strategy, bool Available, string Detail, double NanosecondsPerCall);

/// <summary>The strategy <see cref="ProcessorId"/> uses, why, and what the ladder saw for every strategy.</summary>
/// <param name="Strategy">The active strategy.</param>
/// <param name="Reason">One sentence for logs: why this strategy.</param>
/// <param name="Candidates">Every strategy of the ladder, in ladder order.</param>
/// <param name="SlotCount">The number of shard slots per instrument.</param>
public sealed record ProcessorIdSelection(ProcessorIdStrategy Strategy, string Reason, IReadOnlyList<ProcessorIdCandidate> Candidates, int SlotCount)
{
    /// <summary>A multi-line report for logs and diagnostics.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"PerCpu processor id: {Strategy} ({Reason}); {SlotCount} slots");
        foreach (ProcessorIdCandidate c in Candidates)
        {
            sb.AppendLine();
            string ns = double.IsNaN(c.NanosecondsPerCall) ? "-" : c.NanosecondsPerCall.ToString("0.00", CultureInfo.InvariantCulture) + " ns";
            sb.Append(CultureInfo.InvariantCulture, $"  {c.Strategy,-18} {(c.Available ? "ok " : "no ")} {ns,9}  {c.Detail}");
        }

        return sb.ToString();
    }
}
