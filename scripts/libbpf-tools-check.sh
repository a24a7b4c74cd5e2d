#!/bin/sh
# Counts, over Debian's libbpf-tools objects, how many bpftool loads (`prog loadall`) and
# how many pass `kops verify`. Needs root. Usage: scripts/libbpf-tools-check.sh [KOPS] [DIR]
# Prints one line per object: NAME bpftool=ok|fail kops=ok|fail, then the totals.
set -u
kops=${1:-target/release/kops}
dir=${2:-$(mktemp -d)}
here=$(dirname "$0")
[ -n "$(ls "$dir"/*.bpf.o 2>/dev/null)" ] || "$here/libbpf-tools-objects.sh" "$dir" >/dev/null || exit 2
mount | grep -q ' /sys/fs/bpf type bpf' || mount -t bpf bpf /sys/fs/bpf || exit 2
pin=/sys/fs/bpf/kops-lbt-$$
n=0; b=0; k=0; both=0
for o in "$dir"/*.bpf.o; do
    n=$((n + 1))
    name=$(basename "$o" .bpf.o)
    if timeout 300 bpftool prog loadall "$o" "$pin" >/dev/null 2>&1; then bt=ok; b=$((b + 1)); else bt=fail; fi
    rm -rf "$pin"
    if timeout 300 "$kops" verify "$o" >"$dir/$name.kops.txt" 2>&1; then kv=ok; k=$((k + 1)); else kv=fail; fi
    [ $bt = ok ] && [ $kv = ok ] && both=$((both + 1))
    echo "$name bpftool=$bt kops=$kv"
done
echo "$n objects, $b load with bpftool, $k pass kops verify, $both both"
