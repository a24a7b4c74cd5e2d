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
if [ $# -gt 0 ]; then
	names="$*"
else
	names=$(ls bpf/progs/*.bpf.c | sed 's|.*/||; s|\.bpf\.c$||' | LC_ALL=C sort)
fi
for n in $names; do
	"$CLANG" -O2 -g -target bpf -mcpu=v3 \
		-I/usr/include/x86_64-linux-gnu -Ibpf/include \
		-fdebug-prefix-map="$root"=. -fno-ident \
		-Wall -Werror \
		-c "bpf/progs/$n.bpf.c" -o "bpf/out/$n.bpf.o"
	echo "built bpf/out/$n.bpf.o"
done
