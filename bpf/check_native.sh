#!/bin/sh
# Differential check: for every program with a native counterpart, run the
# BPF object once in the kernel (bpftool prog run, the kernel is the oracle)
# and compare its .bss kops_result with bpf/native's kops_native_<prog> on the
# same packet. Usage: bpf/check_native.sh [PACKET...] (default: generated
# 1500/64-byte UDP and 1500/200-byte TCP packets). Needs root, bpftool, cc.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
${CC:-cc} -O2 -I"$here/include" "$here/native/native.c" "$here/native/run.c" -o "$tmp/run"
if [ $# -eq 0 ]; then
	python3 "$here/gen_packet.py" "$tmp/udp1500.bin" 1500 udp 1
	python3 "$here/gen_packet.py" "$tmp/udp64.bin" 64 udp 2
	python3 "$here/gen_packet.py" "$tmp/tcp1500.bin" 1500 tcp 3
	python3 "$here/gen_packet.py" "$tmp/tcp200.bin" 200 tcp 4
	set -- "$tmp/udp1500.bin" "$tmp/udp64.bin" "$tmp/tcp1500.bin" "$tmp/tcp200.bin"
fi
fail=0
progs=$("$tmp/run" "$1" | cut -d' ' -f1)
for n in $progs; do
	pin=/sys/fs/bpf/kops_chk_$n
	rm -rf "$pin"
	bpftool prog loadall "$here/out/$n.bpf.o" "$pin" 2>"$tmp/log" || { echo "FAIL $n: load"; fail=1; continue; }
	bss=$(bpftool -j prog show pinned "$pin/$n" | python3 -c '
import json, subprocess, sys
for m in json.load(sys.stdin).get("map_ids", []):
    info = json.loads(subprocess.check_output(["bpftool", "-j", "map", "show", "id", str(m)]))
    if info["name"].endswith(".bss"):
        print(m)')
	for pkt in "$@"; do
		bpftool prog run pinned "$pin/$n" data_in "$pkt" repeat 1 >/dev/null
		got=$(bpftool -j map dump id "$bss" | python3 -c '
import json, sys
def walk(o):
    if isinstance(o, dict):
        if "kops_result" in o: return o["kops_result"]
        for v in o.values():
            r = walk(v)
            if r is not None: return r
    if isinstance(o, list):
        for v in o:
            r = walk(v)
            if r is not None: return r
    return None
print("0x%016x" % walk(json.load(sys.stdin)))')
		want=$("$tmp/run" "$pkt" "$n" | cut -d' ' -f2)
		if [ "$got" = "$want" ]; then
			echo "ok   $n $(basename "$pkt") $got"
		else
			echo "FAIL $n $(basename "$pkt") kernel $got native $want"; fail=1
		fi
	done
	rm -rf "$pin"
done
exit $fail
