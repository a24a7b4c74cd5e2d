#!/bin/sh
# Build every bpf/progs/<name>.bpf.c into bpf/out/<name>.bpf.o.
# Deterministic: fixed flags, sorted order, -fdebug-prefix-map so the
# checkout path does not end up in DWARF/BTF.
# Usage: bpf/build.sh [name...]   (run from anywhere)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
CLANG=${CLANG:-clang-19}
cd "$root"
mkdir -p bpf/out
mkdir -p bpf/out_legacy
build() { # src dst
	"$CLANG" -O2 -g -target bpf -mcpu=v3 \
		-I/usr/include/x86_64-linux-gnu -Ibpf/include \
		-fdebug-prefix-map="$root"=. -fno-ident \
		-Wall -Werror \
		-c "$1" -o "$2"
	echo "built $2"
}
if [ $# -gt 0 ]; then
	names="$*"
else
	names=$(ls bpf/progs/*.bpf.c | sed 's|.*/||; s|\.bpf\.c$||' | LC_ALL=C sort)
	# Legacy SEC("maps") objects: libbpf >= 1.0 (bpftool) refuses to open
	# them, so they live apart (load with bpf/legacy_load.py).
	for f in $(ls bpf/progs_legacy/*.bpf.c | LC_ALL=C sort); do
		n=$(basename "$f" .bpf.c)
		build "$f" "bpf/out_legacy/$n.bpf.o"
	done
fi
for n in $names; do
	if [ -f "bpf/progs/$n.bpf.c" ]; then
		build "bpf/progs/$n.bpf.c" "bpf/out/$n.bpf.o"
	else
		build "bpf/progs_legacy/$n.bpf.c" "bpf/out_legacy/$n.bpf.o"
	fi
done
