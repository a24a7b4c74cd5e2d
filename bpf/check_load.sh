#!/bin/sh
# Load every bpf/out/*.bpf.o with bpftool (kernel verifier), pin under
# /sys/fs/bpf/kops_<name>, optionally time it, then remove the pins.
# Usage: bpf/check_load.sh [name...]; env RUN=1 also runs each program with
# bpftool prog run (repeat $REPEAT, default 1000) on $PKT (1500-byte packet).
set -u
here=$(cd "$(dirname "$0")" && pwd)
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
if [ $# -gt 0 ]; then names="$*"; else
	names=$(ls "$here"/out/*.bpf.o | sed 's|.*/||; s|\.bpf\.o$||' | LC_ALL=C sort)
fi
fail=0
for n in $names; do
	pin=/sys/fs/bpf/kops_$n
	rm -rf "$pin"
	# -d: libbpf debug output incl. the verifier log, whose "processed N insns"
	# line per program gives the verification cost.
	if ! bpftool -d prog loadall "$here/out/$n.bpf.o" "$pin" >/tmp/kops_load_$n.log 2>&1; then
		echo "FAIL $n (log: /tmp/kops_load_$n.log)"; fail=1; continue
	fi
	vi=$(grep -a -o '^processed [0-9]* insns' /tmp/kops_load_$n.log | cut -d' ' -f2 | tr '\n' ' ')
	line="OK   $n verified_insns: $vi"
	if [ "${RUN:-0}" = 1 ]; then
		for prog in "$pin"/*; do
			out=$(bpftool prog run pinned "$prog" data_in "${PKT:-/tmp/kops_pkt1500.bin}" repeat "${REPEAT:-1000}" 2>&1)
			line="$line $(basename "$prog"): $(echo "$out" | tr '\n' ' ')"
		done
	fi
	echo "$line"
	rm -rf "$pin"
done
exit $fail
