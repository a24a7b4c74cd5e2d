#!/bin/bash
# Build the real-world corpus: networking BPF objects that nobody on this project wrote.
#
#   scripts/corpus.sh [OUTDIR]      (default: target/corpus)
#
# - installs the Debian packages it needs (linux-source-6.12, xdp-tools, libxdp1, bpftool,
#   clang-19, libbpf-dev) when missing;
# - compiles the networking programs (XDP, tc, socket filters, sk_skb, flow dissector,
#   lwt, cgroup skb) of the kernel's tools/testing/selftests/bpf/progs and samples/bpf
#   against a vmlinux.h generated from the running kernel's BTF and the libbpf headers of
#   the same kernel tree, with the selftests' own flags;
# - copies the prebuilt objects of xdp-tools and libxdp;
# - writes OUTDIR/list.tsv: object, origin, built|failed, and the first compiler error
#   of each file that did not build.
# Nothing is vendored: everything comes from Debian packages at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-target/corpus}")
KVER=6.12
TARBALL=/usr/src/linux-source-$KVER.tar.xz
JOBS=$(nproc)

need=()
[ -f "$TARBALL" ] || need+=("linux-source-$KVER")
[ -d /usr/lib/x86_64-linux-gnu/bpf ] && ls /usr/lib/x86_64-linux-gnu/bpf/xdpfilt_*.o >/dev/null 2>&1 || need+=(xdp-tools libxdp1)
command -v bpftool >/dev/null || need+=(bpftool)
command -v clang-19 >/dev/null || need+=(clang-19)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "corpus: installing ${need[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

SRC=$OUT/src/linux-source-$KVER
if [ ! -d "$SRC/tools/testing/selftests/bpf/progs" ]; then
    echo "corpus: extracting the selftests and samples from $TARBALL"
    mkdir -p "$OUT/src"
    tar -xJf "$TARBALL" -C "$OUT/src" \
        linux-source-$KVER/tools/testing/selftests/bpf linux-source-$KVER/samples/bpf \
        linux-source-$KVER/tools/lib/bpf linux-source-$KVER/include/uapi \
        linux-source-$KVER/tools/include linux-source-$KVER/scripts/bpf_doc.py
fi

# Headers: vmlinux.h of the running kernel, and libbpf's headers from the same tree with
# the generated helper definitions (what `make -C tools/lib/bpf install_headers` makes).
INC=$OUT/include
mkdir -p "$INC/bpf"
[ -s "$INC/vmlinux.h" ] || bpftool btf dump file /sys/kernel/btf/vmlinux format c > "$INC/vmlinux.h"
cp "$SRC"/tools/lib/bpf/{bpf_helpers.h,bpf_endian.h,bpf_tracing.h,bpf_core_read.h,usdt.bpf.h} "$INC/bpf/"
[ -s "$INC/bpf/bpf_helper_defs.h" ] || python3 "$SRC/scripts/bpf_doc.py" --header \
    --file "$SRC/include/uapi/linux/bpf.h" > "$INC/bpf/bpf_helper_defs.h"

# samples/bpf's older programs are built in the kernel tree (`uapi/linux/bpf.h`, kernel
# `u32` types): point `uapi/` at the installed sanitized headers and define the types.
mkdir -p "$INC/samples-compat"
ln -sfn /usr/include "$INC/samples-compat/uapi"
cat > "$INC/samples-compat/kernel-types.h" <<'H'
#include <linux/types.h>
#include <stdbool.h>
#include <linux/tcp.h>
#include <linux/udp.h>
typedef __u8 u8; typedef __u16 u16; typedef __u32 u32; typedef __u64 u64;
typedef __s8 s8; typedef __s16 s16; typedef __s32 s32; typedef __s64 s64;
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define __force
#define memcpy __builtin_memcpy
#define htons(x) __builtin_bswap16(x)
#define ntohs(x) __builtin_bswap16(x)
#define htonl(x) __builtin_bswap32(x)
#define ntohl(x) __builtin_bswap32(x)
#define cpu_to_be32(x) __builtin_bswap32(x)
#define memset __builtin_memset
#define max(a, b) ((a) > (b) ? (a) : (b))
#define AF_INET 2
#define AF_INET6 10
H

ST=$SRC/tools/testing/selftests/bpf
FLAGS=(-O2 -g -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -std=gnu11 -fno-strict-aliasing
    -Wno-compare-distinct-pointer-types -I"$INC" -idirafter /usr/include/x86_64-linux-gnu)
NET='SEC\("(xdp|tc|tcx|classifier|action|socket|sk_skb|flow_dissector|lwt_|cgroup_skb|cgroup/skb|netfilter)'

mkdir -p "$OUT/obj/selftests" "$OUT/obj/samples" "$OUT/obj/prebuilt" "$OUT/log"
build() { # origin src out extra-includes...
    local origin=$1 src=$2 out=$3; shift 3
    local log=$OUT/log/$origin-$(basename "$src" .c).log
    if [ -s "$out" ] && [ "$out" -nt "$src" ]; then
        printf '%s\t%s\tbuilt\t\n' "$out" "$origin"
    elif clang-19 "${FLAGS[@]}" "$@" -c "$src" -o "$out" 2>"$log"; then
        printf '%s\t%s\tbuilt\t\n' "$out" "$origin"
    else
        rm -f "$out"
        printf '%s\t%s\tfailed\t%s\n' "$src" "$origin" "$(grep -m1 'error:' "$log" | sed "s|$SRC/||" | tr '\t' ' ')"
    fi
}
export -f build
export OUT SRC
export FLAGS_STR="${FLAGS[*]}"

list=$OUT/list.tsv.tmp
: > "$list"
echo "corpus: compiling selftests/bpf networking programs ($JOBS jobs)"
grep -lE "$NET" "$ST"/progs/*.c | sort | xargs -P "$JOBS" -I{} bash -c \
    'FLAGS=($FLAGS_STR); build selftests {} "$OUT/obj/selftests/$(basename {} .c).bpf.o" -I"$SRC/tools/testing/selftests/bpf" -I"$SRC/tools/include/uapi"' >> "$list"
echo "corpus: compiling samples/bpf networking programs"
grep -lE "$NET|SEC\(\"(xdp_|socket[0-9]|tc_)" "$SRC"/samples/bpf/*_kern.c "$SRC"/samples/bpf/*.bpf.c 2>/dev/null | sort | xargs -P "$JOBS" -I{} bash -c \
    'FLAGS=($FLAGS_STR); x=(); grep -q "vmlinux.h" {} || x=(-I"$OUT/include/samples-compat" -include kernel-types.h -DKBUILD_MODNAME=\"kops\");
     build samples {} "$OUT/obj/samples/$(basename {} .c | sed s/\\.bpf$//).bpf.o" -I"$SRC/samples/bpf" -I"$SRC/tools/testing/selftests/bpf" "${x[@]}"' >> "$list"
for f in /usr/lib/x86_64-linux-gnu/bpf/*.o; do
    cp "$f" "$OUT/obj/prebuilt/"
    printf '%s\t%s\tbuilt\t\n' "$OUT/obj/prebuilt/$(basename "$f")" "$(dpkg -S "$f" | cut -d: -f1)" >> "$list"
done
sort "$list" > "$OUT/list.tsv" && rm -f "$list"
built=$(awk -F'\t' '$3 == "built"' "$OUT/list.tsv" | wc -l)
failed=$(awk -F'\t' '$3 == "failed"' "$OUT/list.tsv" | wc -l)
echo "corpus: $built objects in $OUT/obj, $failed sources did not compile (reasons in $OUT/list.tsv)"
