using System.Buffers.Binary;

namespace PerCpu.Internal;

/// <summary>
/// Machine code of the rseq write stubs (x86-64, System V calling convention), assembled here byte by byte, with
/// their <c>struct rseq_cs</c> descriptors (include/uapi/linux/rseq.h: u32 version, u32 flags, u64 start_ip,
/// u64 post_commit_offset, u64 abort_ip; 32-byte aligned), in one page mapped W^X.
/// </summary>
/// <remarks>
/// Each stub: store the descriptor's address into <c>rseq-&gt;rseq_cs</c> (fs-relative); section start; check
/// <c>cpu_id</c> &gt;= 0; read <c>mm_cid</c>, compare it (unsigned) with the slot mask; load the slot's cell object;
/// the single commit instruction; section end. Failures leave the section by a jump. The abort handler, preceded by
/// the 4-byte signature (inside a <c>ud1</c>, as librseq does, so it decodes as a trapping instruction), jumps back to
/// the descriptor store: the kernel clears <c>rseq_cs</c> when it aborts a section.
/// </remarks>
internal static unsafe class RseqStubs
{
    private const int RseqCsField = 8;   // struct rseq: u32 cpu_id_start; u32 cpu_id; u64 rseq_cs; ...
    private const int CpuIdField = 4;
    private const int MmCidField = 24;

    /// <summary>The production stubs' entry points.</summary>
    /// <param name="Add"><c>int add(nint* slots, nint offset, long value, long* newValue)</c>.</param>
    /// <param name="AddDouble"><c>int addDouble(nint* slots, nint offset, double value)</c>.</param>
    /// <param name="AddTwo"><c>int addTwo(nint* slots, nint offset1, long value1, nint offset2, long value2, long* newValue2)</c>: two sections, one call.</param>
    /// <param name="AddThenDouble"><c>int addThenDouble(nint* slots, nint offset1, long value1, nint offset2, double value2)</c>.</param>
    internal readonly record struct Entries(nint Add, nint AddDouble, nint AddTwo, nint AddThenDouble);

    /// <summary>Builds the production stubs; returns the page (0 when refused, with the reason).</summary>
    public static nint Build(nint rseqOffset, int slotMask, out Entries entries, out string? refusal)
    {
        var asm = new Assembler();
        int addAt = EmitAdd(asm, rseqOffset, slotMask, "a");
        int doubleAt = EmitAddDouble(asm, rseqOffset, slotMask, "d");
        int twoAt = EmitAddTwo(asm, rseqOffset, slotMask, "t", doubleSecond: false);
        int thenDoubleAt = EmitAddTwo(asm, rseqOffset, slotMask, "u", doubleSecond: true);
        nint page = Map(asm, ["a", "d", "t1", "t2", "u1", "u2"], out refusal);
        entries = page == 0 ? default : new Entries(page + addAt, page + doubleAt, page + twoAt, page + thenDoubleAt);
        return page;
    }

    /// <summary>
    /// Two sections in one call (a histogram record: the bucket, then the sum), each with its own descriptor and abort
    /// handler. Returns the first section's slot; or, when the first could not run, its negative code (nothing added);
    /// or the first slot + <see cref="SecondNotDone"/> when only the first ran (the caller then adds the second).
    /// </summary>
    private static int EmitAddTwo(Assembler asm, nint rseqOffset, int slotMask, string p, bool doubleSecond)
    {
        string first = p + "1", second = p + "2";
        int at = asm.Here;
        if (!doubleSecond)
        {
            asm.Emit(0x4D, 0x89, 0xC2);   // mov r10, r8: value2
            asm.Emit(0x4D, 0x89, 0xCB);   // mov r11, r9: newValue2*
        }

        Prologue(asm, rseqOffset, slotMask, first);
        asm.Emit(0x48, 0x89, 0xD0);       // mov rax, rdx
        asm.Emit(0x49, 0x0F, 0xC1, 0x04, 0x30); // xadd [r8 + rsi], rax: first commit
        asm.Label(first + "post");
        asm.Emit(0x44, 0x89, 0xCA);       // mov edx, r9d: the first slot, returned at the end
        Prologue(asm, rseqOffset, slotMask, second);
        if (doubleSecond)
        {
            asm.Emit(0xF2, 0x41, 0x0F, 0x10, 0x0C, 0x08); // movsd xmm1, [r8 + rcx]
            asm.Emit(0xF2, 0x0F, 0x58, 0xC8);             // addsd xmm1, xmm0
            asm.Emit(0xF2, 0x41, 0x0F, 0x11, 0x0C, 0x08); // movsd [r8 + rcx], xmm1: second commit
            asm.Label(second + "post");
        }
        else
        {
            asm.Emit(0x4C, 0x89, 0xD0);   // mov rax, r10
            asm.Emit(0x49, 0x0F, 0xC1, 0x04, 0x08); // xadd [r8 + rcx], rax: second commit
            asm.Label(second + "post");
            asm.Emit(0x4C, 0x01, 0xD0);   // add rax, r10: the new value
            asm.Emit(0x4D, 0x85, 0xDB);   // test r11, r11
            asm.Emit(0x74);               // jz skip
            asm.Rel8(second + "skip");
            asm.Emit(0x49, 0x89, 0x03);   // mov [r11], rax
            asm.Label(second + "skip");
        }

        asm.Emit(0x89, 0xD0);             // mov eax, edx
        asm.Emit(0xC3);
        Epilogue(asm, first);
        asm.Label(second + "fallback");   // the second section could not run: report the first slot, flagged
        asm.Label(second + "missing");
        asm.Emit(0x8D, 0x82);             // lea eax, [rdx + SecondNotDone]
        asm.Imm32(SecondNotDone);
        asm.Emit(0xC3);
        asm.Emit(0x0F, 0xB9, 0x3D);       // ud1 with the signature
        asm.Imm32(unchecked((int)RseqWrites.Signature));
        asm.Label(second + "abort");
        asm.Emit(0xE9);                   // abort: jmp to the second section's entry
        asm.Rel32(second + "entry");
        return at;
    }

    /// <summary>Added to the first slot when a two-section stub ran only the first section.</summary>
    public const int SecondNotDone = 0x10000;

    /// <summary>
    /// A test stub with a widened window: <c>int add(nint* slots, nint byteOffset, long value, long* aborts)</c> loads the
    /// cell, spins <paramref name="spin"/> pause instructions, then stores the sum (a plain read-modify-write that only
    /// the kernel's restarts keep exact). Each abort increments <c>*aborts</c>. With <paramref name="register"/> false
    /// the section is never announced to the kernel, so nothing restarts it.
    /// </summary>
    public static nint BuildWidened(nint rseqOffset, int slotMask, int spin, bool register, out string? refusal)
    {
        var asm = new Assembler();
        const string P = "w";
        asm.Label(P + "entry");
        asm.Emit(0x48, 0x8D, 0x05); // lea rax, [rip + descriptor]
        asm.Rel32(P + "cs");
        if (register)
        {
            FsStoreRax(asm, rseqOffset + RseqCsField);
        }

        asm.Label(P + "start");
        IdAndCell(asm, rseqOffset, slotMask, P);
        asm.Emit(0x49, 0x8B, 0x04, 0x30); // mov rax, [r8 + rsi]
        asm.Emit(0x41, 0xBA);             // mov r10d, spin
        asm.Imm32(spin);
        asm.Label(P + "spin");
        asm.Emit(0xF3, 0x90);             // pause
        asm.Emit(0x41, 0xFF, 0xCA);       // dec r10d
        asm.Emit(0x75);                   // jnz spin
        asm.Rel8(P + "spin");
        asm.Emit(0x48, 0x01, 0xD0);       // add rax, rdx
        asm.Emit(0x49, 0x89, 0x04, 0x30); // mov [r8 + rsi], rax: the commit
        asm.Label(P + "post");
        asm.Emit(0x44, 0x89, 0xC8);       // mov eax, r9d
        asm.Emit(0xC3);
        Exits(asm, P);
        asm.Emit(0xF0, 0x48, 0xFF, 0x01); // abort: lock inc qword [rcx]
        asm.Emit(0xE9);                   // jmp entry
        asm.Rel32(P + "entry");
        nint page = Map(asm, [P], out refusal);
        return page == 0 ? 0 : page + asm.At(P + "entry");
    }

    /// <summary><c>int add(nint* slots, nint byteOffset, long value, long* newValue)</c> with <c>xadd</c> as the commit.</summary>
    private static int EmitAdd(Assembler asm, nint rseqOffset, int slotMask, string p)
    {
        Prologue(asm, rseqOffset, slotMask, p);
        asm.Emit(0x48, 0x89, 0xD0);       // mov rax, rdx
        asm.Emit(0x49, 0x0F, 0xC1, 0x04, 0x30); // xadd [r8 + rsi], rax: the commit (no lock prefix)
        asm.Label(p + "post");
        asm.Emit(0x48, 0x01, 0xD0);       // add rax, rdx: the new value
        asm.Emit(0x48, 0x85, 0xC9);       // test rcx, rcx
        asm.Emit(0x74);                   // jz skip
        asm.Rel8(p + "skip");
        asm.Emit(0x48, 0x89, 0x01);       // mov [rcx], rax
        asm.Label(p + "skip");
        asm.Emit(0x44, 0x89, 0xC8);       // mov eax, r9d: the slot
        asm.Emit(0xC3);
        Epilogue(asm, p);
        return asm.At(p + "entry");
    }

    /// <summary><c>int addDouble(nint* slots, nint byteOffset, double value)</c>: load, add, and a <c>movsd</c> store as the commit.</summary>
    private static int EmitAddDouble(Assembler asm, nint rseqOffset, int slotMask, string p)
    {
        Prologue(asm, rseqOffset, slotMask, p);
        asm.Emit(0xF2, 0x41, 0x0F, 0x10, 0x0C, 0x30); // movsd xmm1, [r8 + rsi]
        asm.Emit(0xF2, 0x0F, 0x58, 0xC8);             // addsd xmm1, xmm0
        asm.Emit(0xF2, 0x41, 0x0F, 0x11, 0x0C, 0x30); // movsd [r8 + rsi], xmm1: the commit
        asm.Label(p + "post");
        asm.Emit(0x44, 0x89, 0xC8);       // mov eax, r9d
        asm.Emit(0xC3);
        Epilogue(asm, p);
        return asm.At(p + "entry");
    }

    /// <summary>Entry: announce the section's descriptor; section start; the id checks and the cell load.</summary>
    private static void Prologue(Assembler asm, nint rseqOffset, int slotMask, string p)
    {
        asm.Label(p + "entry");
        asm.Emit(0x48, 0x8D, 0x05);       // lea rax, [rip + descriptor]
        asm.Rel32(p + "cs");
        FsStoreRax(asm, rseqOffset + RseqCsField);
        asm.Label(p + "start");
        IdAndCell(asm, rseqOffset, slotMask, p);
    }

    /// <summary>The exits, the signature, and an abort handler that starts the section again.</summary>
    private static void Epilogue(Assembler asm, string p)
    {
        Exits(asm, p);
        asm.Emit(0xE9);                   // abort: jmp entry
        asm.Rel32(p + "entry");
    }

    /// <summary>cpu_id check, mm_cid into r9d (bounded by the mask), the slot's cell object into r8.</summary>
    private static void IdAndCell(Assembler asm, nint rseqOffset, int slotMask, string p)
    {
        asm.Emit(0x64, 0x8B, 0x04, 0x25); // mov eax, fs:[cpu_id]
        asm.Imm32(checked((int)(rseqOffset + CpuIdField)));
        asm.Emit(0x85, 0xC0);             // test eax, eax
        asm.Emit(0x78);                   // js fallback: this thread has no registered area
        asm.Rel8(p + "fallback");
        asm.Emit(0x64, 0x44, 0x8B, 0x0C, 0x25); // mov r9d, fs:[mm_cid]
        asm.Imm32(checked((int)(rseqOffset + MmCidField)));
        asm.Emit(0x41, 0x81, 0xF9);       // cmp r9d, mask
        asm.Imm32(slotMask);
        asm.Emit(0x77);                   // ja fallback (unsigned: a negative id too)
        asm.Rel8(p + "fallback");
        asm.Emit(0x4E, 0x8B, 0x04, 0xCF); // mov r8, [rdi + r9*8]
        asm.Emit(0x4D, 0x85, 0xC0);       // test r8, r8
        asm.Emit(0x74);                   // jz missing
        asm.Rel8(p + "missing");
    }

    /// <summary>The two exits outside the section, then the signature that must precede the abort handler.</summary>
    private static void Exits(Assembler asm, string p)
    {
        asm.Label(p + "fallback");
        asm.Emit(0xB8, 0xFF, 0xFF, 0xFF, 0xFF); // mov eax, -1
        asm.Emit(0xC3);
        asm.Label(p + "missing");
        asm.Emit(0x41, 0x8D, 0x41, 0x02); // lea eax, [r9 + 2]
        asm.Emit(0xF7, 0xD8);             // neg eax: -(slot + 2)
        asm.Emit(0xC3);
        asm.Emit(0x0F, 0xB9, 0x3D);       // ud1 edi, [rip + signature]: the signature is its displacement
        asm.Imm32(unchecked((int)RseqWrites.Signature));
        asm.Label(p + "abort");
    }

    private static void FsStoreRax(Assembler asm, nint fsOffset)
    {
        asm.Emit(0x64, 0x48, 0x89, 0x04, 0x25); // mov qword fs:[disp32], rax
        asm.Imm32(checked((int)fsOffset));
    }

    /// <summary>Appends the descriptors, then maps the page W^X with their absolute addresses filled in.</summary>
    private static nint Map(Assembler asm, string[] stubs, out string? refusal)
    {
        asm.AlignTo(32);
        foreach (string p in stubs)
        {
            asm.Label(p + "cs");
            asm.Emit(new byte[32]);
        }

        byte[] code = asm.Link();
        if (code.Length > Environment.SystemPageSize)
        {
            refusal = "stubs larger than a page";
            return 0;
        }

        return ExecutableMemory.Create((bytes, address) =>
        {
            foreach (string p in stubs)
            {
                Span<byte> cs = code.AsSpan(asm.At(p + "cs"), 32);
                BinaryPrimitives.WriteUInt32LittleEndian(cs, 0);      // version
                BinaryPrimitives.WriteUInt32LittleEndian(cs[4..], 0); // flags: restart on preemption, signal and migration
                BinaryPrimitives.WriteUInt64LittleEndian(cs[8..], (ulong)(address + asm.At(p + "start")));
                BinaryPrimitives.WriteUInt64LittleEndian(cs[16..], (ulong)(asm.At(p + "post") - asm.At(p + "start")));
                BinaryPrimitives.WriteUInt64LittleEndian(cs[24..], (ulong)(address + asm.At(p + "abort")));
            }

            code.CopyTo(bytes);
        }, out refusal);
    }

    /// <summary>Just enough of an assembler: bytes, labels, and rel8/rel32 jumps resolved at link time.</summary>
    private sealed class Assembler
    {
        private readonly List<byte> _code = [];
        private readonly Dictionary<string, int> _labels = [];
        private readonly List<(int At, string Label, int Size)> _fixups = [];

        public void Emit(params byte[] bytes) => _code.AddRange(bytes);

        public void Imm32(int value)
        {
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(b, value);
            _code.AddRange(b);
        }

        public int Here => _code.Count;

        public void Label(string name) => _labels.Add(name, _code.Count);

        public int At(string name) => _labels[name];

        public void Rel8(string label)
        {
            _fixups.Add((_code.Count, label, 1));
            _code.Add(0);
        }

        public void Rel32(string label)
        {
            _fixups.Add((_code.Count, label, 4));
            Imm32(0);
        }

        public void AlignTo(int alignment)
        {
            while (_code.Count % alignment != 0)
            {
                _code.Add(0xCC); // int3: never executed
            }
        }

        public byte[] Link()
        {
            byte[] code = [.. _code];
            foreach ((int at, string label, int size) in _fixups)
            {
                int rel = _labels[label] - (at + size);
                if (size == 1)
                {
                    if (rel is < sbyte.MinValue or > sbyte.MaxValue)
                    {
                        throw new InvalidOperationException($"jump to {label} out of rel8 range");
                    }

                    code[at] = unchecked((byte)(sbyte)rel);
                }
                else
                {
                    BinaryPrimitives.WriteInt32LittleEndian(code.AsSpan(at), rel);
                }
            }

            return code;
        }
    }
}
