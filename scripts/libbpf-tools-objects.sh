#!/bin/sh
# Extracts the BPF objects embedded in Debian's libbpf-tools executables into OUTDIR
# (one OUTDIR/<tool>.bpf.o per ELF image with e_machine = EM_BPF found in a binary).
# Usage: scripts/libbpf-tools-objects.sh OUTDIR
set -eu
out=${1:?usage: $0 OUTDIR}
dpkg -L libbpf-tools >/dev/null 2>&1 || { echo "package libbpf-tools is not installed" >&2; exit 2; }
mkdir -p "$out"
dpkg -L libbpf-tools | while read -r f; do
    case "$f" in /usr/sbin/*|/usr/bin/*) ;; *) continue ;; esac
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    python3 - "$f" "$out" <<'PY'
import os, struct, sys
path, out = sys.argv[1], sys.argv[2]
data = open(path, 'rb').read()
tool = os.path.basename(path)
found = 0
i = data.find(b'\x7fELF', 1)
while i >= 0:
    h = data[i:i + 64]
    # ELFCLASS64, little-endian, ET_REL, EM_BPF
    if len(h) == 64 and h[4] == 2 and h[5] == 1 and struct.unpack_from('<HH', h, 16) == (1, 247):
        shoff, = struct.unpack_from('<Q', h, 40)
        shentsize, shnum = struct.unpack_from('<HH', h, 58)
        end = shoff + shnum * shentsize
        if 0 < end <= len(data) - i:
            name = tool if found == 0 else f'{tool}.{found}'
            open(os.path.join(out, name + '.bpf.o'), 'wb').write(data[i:i + end])
            found += 1
    i = data.find(b'\x7fELF', i + 1)
PY
done
ls "$out"/*.bpf.o 2>/dev/null | wc -l | sed 's/$/ objects/'
