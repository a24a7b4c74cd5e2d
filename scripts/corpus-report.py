#!/usr/bin/env python3
"""Run `kops diff` over the corpus that scripts/corpus.sh built and say, per program, whether
it ran end to end on every runtime, and if not, why.

    scripts/corpus-report.py [--inputs N] [--runtimes kernel,interp,jit,kops] [--kops PATH]
                             [--min-ok N] [OUTDIR]

OUTDIR defaults to target/corpus. Writes OUTDIR/report.tsv (object, program, section,
status, cause) and prints a summary for the networking programs (XDP, tc, socket filters):
how many the kernel verifier does not reject, and how many of those run on every runtime with
0 mismatches.
A program's status is one of:
  ok        every runtime ran it, at least one input compared, 0 mismatches
  rejected  the kernel verifier rejects it (the selftests include programs meant to fail)
  unloadable  libbpf itself cannot prepare the object on this kernel (a kfunc or extern the
            kernel lacks, e.g. bpf_testmod's): bpftool cannot load it either
  mismatch  the runtimes disagree on some input
  not-run   some runtime could not load or run it (the cause names the runtime)
Exit status: 1 when `kops diff` died on an object (a crash is never acceptable) or fewer than
--min-ok verified XDP/tc/socket programs are ok (a regression guard for CI); else 0.
"""
import argparse
import collections
import os
import re
import subprocess
import sys

NET = re.compile(r"^(xdp|tc|tcx/|classifier|action|socket|sk_skb|flow_dissector|lwt_|cgroup_skb|cgroup/skb)")
CORE = re.compile(r"^(xdp|tc|tcx/|classifier|action|socket)")


def sections(obj):
    """Program name -> ELF section, from the symbol table."""
    out = subprocess.run(["llvm-objdump-19", "-t", obj], capture_output=True, text=True).stdout
    m = {}
    for line in out.splitlines():
        f = line.split()
        # 0000000000000000 g     F xdp	00000000000000a8 xdp_prog
        if len(f) >= 6 and f[1] == "g" and f[2] == "F":
            m[f[-1]] = f[3]
    return m


def parse(text):
    """Per program: (status, cause) from one `kops diff` run on one object."""
    progs = {}
    obj_error = None
    lines = text.splitlines()
    cur = None
    for i, line in enumerate(lines):
        m = re.match(r"^(\S+): not run$", line)
        if m:
            cur = m.group(1)
            reasons = []
            for r in lines[i + 1:]:
                if not r.startswith("  "):
                    break
                reasons.append(r.strip())
            rejected = [r for r in reasons if r.startswith("kernel:") and "rejected by the verifier" in r]
            if rejected:
                progs[cur] = ("rejected", rejected[0])
            else:
                progs[cur] = ("not-run", "; ".join(reasons[:2]))
            continue
        m = re.match(r"^(\S+): (\d+) inputs compared, (\d+) mismatches", line)
        if m:
            cur = m.group(1)
            n, mism = int(m.group(2)), int(m.group(3))
            progs[cur] = ("mismatch", f"{mism} of {n} inputs") if mism else ("ok", "")
            continue
        m = re.match(r"^  not run: (.*)$", line)
        if m and cur:
            progs[cur] = ("not-run", m.group(1))
            continue
        if re.match(r"^\S+: error: ", line) and not line.startswith("MISMATCH"):
            obj_error = line.split(": error: ", 1)[1]
    return progs, obj_error


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir", nargs="?", default="target/corpus")
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--runtimes", default="kernel,interp,jit,kops")
    ap.add_argument("--kops", default="target/release/kops")
    ap.add_argument("--min-ok", type=int, default=0)
    # Per object. Loops that only may_goto ends run about 250 ms per kernel test run on
    # kernels with timed may_goto (6.13+), so an object of such programs needs minutes at
    # 200 inputs.
    ap.add_argument("--timeout", type=int, default=1800)
    a = ap.parse_args()
    listing = os.path.join(a.outdir, "list.tsv")
    if not os.path.exists(listing):
        sys.exit(f"corpus-report: {listing} is missing: run scripts/corpus.sh {a.outdir} first")
    objs = [l.split("\t")[0] for l in open(listing) if l.split("\t")[2] == "built"]
    # Objects that iproute2 loads, with the program type tc gives their sections.
    types_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus-types.tsv")
    types = {}
    for l in open(types_file):
        if l.strip() and not l.startswith("#"):
            f = l.rstrip("\n").split("\t")
            types[f[0]] = f[1]
    rows = []
    for obj in objs:
        secs = sections(obj)
        try:
            ty = ["--type", types[os.path.basename(obj)]] if os.path.basename(obj) in types else []
            r = subprocess.run([a.kops, "diff", "--runtimes", a.runtimes, "--inputs", str(a.inputs), *ty, obj],
                               capture_output=True, text=True, timeout=a.timeout)
            out = r.stdout + r.stderr
            crashed = r.returncode < 0
        except subprocess.TimeoutExpired:
            out, crashed = "", False
            for p, s in secs.items():
                rows.append((obj, p, s, "not-run", f"kops diff timed out ({a.timeout} s)"))
            continue
        progs, obj_error = parse(out)
        for p, s in sorted(secs.items()):
            if p in progs:
                st, cause = progs[p]
            elif crashed:
                st, cause = "not-run", f"kops diff died (signal {-r.returncode})"
            elif obj_error:
                # libbpf itself cannot open or prepare the object: no libbpf-based loader
                # (bpftool, the selftests' own) loads it on this kernel either.
                libbpf_fails = "libbpf could not resolve externs" in obj_error or "libbpf cannot open the object" in obj_error
                st = "unloadable" if libbpf_fails else "not-run"
                cause = obj_error
            else:
                # Static functions in program sections are subprograms, not programs.
                continue
            rows.append((obj, p, s, st, cause))
    with open(os.path.join(a.outdir, "report.tsv"), "w") as f:
        for row in rows:
            f.write("\t".join(x.replace("\t", " ") for x in row) + "\n")
    core = [r for r in rows if CORE.match(r[2])]
    verified = [r for r in core if r[3] not in ("rejected", "unloadable")]
    unloadable = [r for r in core if r[3] == "unloadable"]
    ok = [r for r in verified if r[3] == "ok"]
    print(f"corpus: {len(objs)} objects, {len(rows)} programs ({sum(1 for r in rows if NET.match(r[2]))} networking)")
    pct = 100.0 * len(ok) / len(verified) if verified else 0.0
    print(f"XDP/tc/socket programs: {len(core)}; {len(unloadable)} in objects libbpf cannot prepare on this kernel; "
          f"{len(verified)} not rejected by the kernel verifier (verified, or not loaded because of us); "
          f"{len(ok)} run end to end on {a.runtimes} with 0 mismatches ({pct:.0f}%)")
    causes = collections.Counter()
    for r in verified:
        if r[3] != "ok":
            c = re.sub(r"`[^`]*`", "X", r[4])
            c = re.sub(r"insn \d+", "insn N", c)
            c = re.sub(r"/\S+\.o", "OBJ", c)
            causes[f"{r[3]}: {c[:110]}"] += 1
    for c, n in causes.most_common(25):
        print(f"  {n:4d}  {c}")
    died = sorted({r[0] for r in rows if "kops diff died" in r[4]})
    for d in died:
        print(f"corpus-report: kops diff died on {d}")
    if len(ok) < a.min_ok:
        print(f"corpus-report: {len(ok)} programs ok, fewer than --min-ok {a.min_ok}")
    return 1 if died or len(ok) < a.min_ok else 0


if __name__ == "__main__":
    sys.exit(main())
