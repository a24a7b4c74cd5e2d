#!/usr/bin/env python3
"""Count the idiom shapes clang-19 emitted in bpf/out/*.bpf.o, from
`llvm-objdump-19 -d` text (an independent view of the bytecode, for the
README table and for recognizer tests). Approximate by design: it counts
the textbook shapes listed below, nothing cleverer.

  rot64/rot32   rA = rX; rA <<= k; rX >>= W-k; rX |= rA (any order, either
                register may be the copy, both copies allowed)
  sel           `if ... goto +1` followed by a mov (the cmov shape: mov;
                jcc +1; mov), and `sel_full` when a mov to the same register
                precedes the jcc
  extract       rX >>= k directly followed by rX &= mask (64- and 32-bit)
  be16/32/64    load into rX followed (within 4 insns, rX untouched) by
                rX = beN rX of the load's width
  popcnt64/32   rX *= (0x0101..01) followed by rX >>= 56 (resp. w, 24)
  cpy_pairs     8-byte load immediately followed by a store of that register
                (struct copy), `cpy_runs` runs of >= 4 such pairs
  zero_runs     runs of >= 4 consecutive 8-byte stores of one register or of
                immediate 0 (memset)
  ladders       >= 4 single-byte loads from one base register at distinct
                offsets within 24 instructions (byte recomposition)
  jcc           conditional jumps (all)
  calls         bpf-to-bpf calls (pseudo calls), helpers = helper calls
Usage: shapes.py [obj...]  (default bpf/out/*.bpf.o); --json for JSON."""
import glob, json, os, re, subprocess, sys

INS = re.compile(r'^\s*(\d+):\t((?:[0-9a-f]{2} ?)+)\t(.*?)\s*$')

def disasm(path):
    """Instruction texts; calls become `call helper N` / `call pseudo N`
    (src_reg, from the raw bytes, tells them apart: 1 = bpf-to-bpf)."""
    out = subprocess.check_output(["llvm-objdump-19", "-d", path], text=True)
    insns = []
    for line in out.splitlines():
        m = INS.match(line)
        if m:
            raw, t = m.group(2).split(), m.group(3)
            if t.startswith("call "):
                src = int(raw[1], 16) >> 4
                t = "call %s %s" % ({0: "helper", 1: "pseudo", 2: "kfunc"}.get(src, "other"), t.split()[1])
            insns.append(t)
    return insns

def reg(s):
    return s[1:] if s and s[0] in "rw" and s[1:].isdigit() else None

def parse_alu(t):
    m = re.match(r'^([rw])(\d+) (<<=|>>=|s>>=|\|=|&=|\*=|=|\+=|-=|\^=) (.+)$', t)
    if not m:
        return None
    return m.group(1), m.group(2), m.group(3), m.group(4)

def analyse(insns):
    c = dict(insns=len(insns), rot64=0, rot32=0, sel=0, sel_full=0, extract64=0, extract32=0,
             be16=0, be32=0, be64=0, popcnt64=0, popcnt32=0, cpy_pairs=0, cpy_runs=0,
             zero_runs=0, ladders=0, jcc=0, calls=0, helpers=0)
    alu = [parse_alu(t) for t in insns]
    # rotates
    for i, a in enumerate(alu):
        if not a or a[2] != "|=" or not reg(a[3]) or a[3][0] != a[0]:
            continue
        w, d, s = a[0], a[1], a[3][1:]
        width = 64 if w == "r" else 32
        lo = max(0, i - 6)
        def last_def(r, end):
            for j in range(end - 1, lo - 1, -1):
                b = alu[j]
                if b and b[1] == r and b[2] != "|=" or (b is None and re.match(r'^[rw]%s = ' % r, insns[j])):
                    return j
            return None
        jd, js = last_def(d, i), last_def(s, i)
        if jd is None or js is None:
            continue
        bd, bs = alu[jd], alu[js]
        if not bd or not bs or bd[0] != w or bs[0] != w:
            continue
        ops = {bd[2], bs[2]}
        if ops != {"<<=", ">>="}:
            continue
        try:
            kd, ks = int(bd[3], 0), int(bs[3], 0)
        except ValueError:
            continue
        if kd + ks != width:
            continue
        # sources: each shifted register is either a copy of X made just
        # before, or X itself
        def src(r, j):
            for k in range(j - 1, lo - 1, -1):
                b = alu[k]
                if b and b[1] == r:
                    return b[3][1:] if b[2] == "=" and reg(b[3]) else ("def", k)
            return r
        sd, ss = src(d, jd), src(s, js)
        if sd == ss or sd == s or ss == d:
            c["rot64" if width == 64 else "rot32"] += 1
    # selects, extracts, endian, popcount
    for i, t in enumerate(insns):
        m = re.match(r'^if .* goto \+0x1 ', t + " ")
        if m and i + 1 < len(insns):
            b = alu[i + 1]
            if b and b[2] == "=":
                c["sel"] += 1
                p = alu[i - 1] if i > 0 else None
                if p and p[2] == "=" and p[1] == b[1]:
                    c["sel_full"] += 1
        a = alu[i]
        if a and a[2] == ">>=" and i + 1 < len(insns):
            b = alu[i + 1]
            if b and b[1] == a[1] and b[0] == a[0] and b[2] == "&=" and not reg(b[3]):
                c["extract64" if a[0] == "r" else "extract32"] += 1
        m = re.match(r'^r(\d+) = \*\(u(16|32|64) \*\)', t)
        if m:
            r, wdt = m.group(1), m.group(2)
            for k in range(i + 1, min(len(insns), i + 5)):
                if insns[k] == "r%s = be%s r%s" % (r, wdt, r):
                    c["be" + wdt] += 1
                    break
                b = alu[k]
                if (b and b[1] == r) or re.match(r'^r%s = ' % r, insns[k]):
                    break
        if a and a[2] == "*=":
            for k in range(i + 1, min(len(insns), i + 4)):
                b = alu[k]
                if b and b[1] == a[1] and b[2] == ">>=":
                    if a[0] == "r" and b[3] == "0x38":
                        c["popcnt64"] += 1
                    elif a[0] == "w" and b[3] == "0x18" and a[3] == "0x1010101":
                        c["popcnt32"] += 1
                    break
        if t.startswith("call helper"):
            c["helpers"] += 1
        elif t.startswith("call pseudo"):
            c["calls"] += 1
        if re.match(r'^if ', t):
            c["jcc"] += 1
    # copy pairs / runs, zero runs
    run = 0
    for i in range(len(insns) - 1):
        m = re.match(r'^r(\d+) = \*\(u64 \*\)\(r\d+ [+-] 0x[0-9a-f]+\)$', insns[i])
        if m and re.match(r'^\*\(u64 \*\)\(r\d+ [+-] 0x[0-9a-f]+\) = r%s$' % m.group(1), insns[i + 1]):
            c["cpy_pairs"] += 1
    i = 0
    while i < len(insns) - 1:
        n = 0
        while i + 1 < len(insns) and re.match(r'^r(\d+) = \*\(u64 \*\)', insns[i]) and \
                re.match(r'^\*\(u64 \*\)\(.*\) = r%s$' % re.match(r'^r(\d+)', insns[i]).group(1), insns[i + 1]):
            n += 1
            i += 2
        if n >= 4:
            c["cpy_runs"] += 1
        i += 1 if n == 0 else 0
    i = 0
    while i < len(insns):
        m = re.match(r'^\*\(u64 \*\)\(r\d+ [+-] 0x[0-9a-f]+\) = (\S+)$', insns[i])
        if not m:
            i += 1
            continue
        v, n = m.group(1), 0
        while i < len(insns) and re.match(r'^\*\(u64 \*\)\(r\d+ [+-] 0x[0-9a-f]+\) = %s$' % re.escape(v), insns[i]):
            n += 1
            i += 1
        if n >= 4:
            c["zero_runs"] += 1
    # byte ladders
    loads = []
    for i, t in enumerate(insns):
        m = re.match(r'^[rw]\d+ = \*\(u8 \*\)\(r(\d+) ([+-]) (0x[0-9a-f]+)\)$', t)
        if m:
            loads.append((i, m.group(1), int(m.group(3), 16) * (1 if m.group(2) == "+" else -1)))
    used = set()
    for k, (i, base, off) in enumerate(loads):
        if k in used:
            continue
        grp = [q for q in range(k, len(loads)) if loads[q][0] - i < 24 and loads[q][1] == base and q not in used]
        offs = {loads[q][2] for q in grp}
        if len(offs) >= 4:
            c["ladders"] += 1
            used.update(grp)
    return c

def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    here = os.path.dirname(os.path.abspath(__file__))
    objs = args or sorted(glob.glob(os.path.join(here, "out", "*.bpf.o")))
    res = {os.path.basename(o)[:-len(".bpf.o")]: analyse(disasm(o)) for o in objs}
    if "--json" in sys.argv:
        print(json.dumps(res, indent=1, sort_keys=True))
        return
    keys = list(next(iter(res.values())).keys())
    print("| prog | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for n, c in res.items():
        print("| %s | %s |" % (n, " | ".join(str(c[k]) for k in keys)))

if __name__ == "__main__":
    main()
