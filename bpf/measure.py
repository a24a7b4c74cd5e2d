#!/usr/bin/env python3
"""Load every bpf/out/*.bpf.o with bpftool (kernel verifier), and report per
program: verifier cost (processed insns), xlated/jited size, and kernel JIT
time per run from BPF_PROG_TEST_RUN (bpftool prog run, repeat N) on
deterministic 1500- and 64-byte Ethernet+IPv4+UDP packets (gen_packet.py).
Pins go to /sys/fs/bpf/kops_m_<name> and are removed. Needs root.
Usage: measure.py [--repeat N] [name...]"""
import json, os, re, subprocess, sys, tempfile

here = os.path.dirname(os.path.abspath(__file__))

def sh(*a, check=True):
    return subprocess.run(a, capture_output=True, text=True, check=check)

def main():
    args = sys.argv[1:]
    repeat = 1000
    if "--repeat" in args:
        i = args.index("--repeat"); repeat = int(args[i + 1]); del args[i:i + 2]
    names = args or sorted(f[:-6] for f in os.listdir(os.path.join(here, "out")) if f.endswith(".bpf.o"))
    if not os.path.ismount("/sys/fs/bpf"):
        sh("mount", "-t", "bpf", "bpf", "/sys/fs/bpf")
    tmp = tempfile.mkdtemp()
    pk = {}
    for n in (1500, 64):
        pk[n] = os.path.join(tmp, "udp%d.bin" % n)
        sh(sys.executable, os.path.join(here, "gen_packet.py"), pk[n], str(n), "udp", "1")
    print("| program | verified insns | xlated B | jited B | ns/run 1500B | ns/run 64B |")
    print("|---|---|---|---|---|---|")
    bad = 0
    for name in names:
        pin = "/sys/fs/bpf/kops_m_" + name
        sh("rm", "-rf", pin)
        r = sh("bpftool", "-d", "prog", "loadall", os.path.join(here, "out", name + ".bpf.o"), pin, check=False)
        if r.returncode:
            print("| %s | LOAD FAILED | | | | |" % name); bad = 1; continue
        ver = re.findall(r"^processed (\d+) insns", r.stderr + r.stdout, re.M)
        for prog in sorted(os.listdir(pin)):
            info = json.loads(sh("bpftool", "-j", "prog", "show", "pinned", os.path.join(pin, prog)).stdout)
            t = {}
            for n, f in pk.items():
                o = sh("bpftool", "prog", "run", "pinned", os.path.join(pin, prog), "data_in", f,
                       "repeat", str(repeat)).stdout
                m = re.search(r"duration \(average\): (\d+)ns", o)
                t[n] = m.group(1) if m else "?"
            print("| %s | %s | %d | %d | %s | %s |" % (prog, "/".join(ver) or "?", info.get("bytes_xlated", 0),
                                                       info.get("bytes_jited", 0), t[1500], t[64]))
        sh("rm", "-rf", pin)
    return bad

if __name__ == "__main__":
    sys.exit(main())
