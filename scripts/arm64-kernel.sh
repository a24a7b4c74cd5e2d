#!/bin/bash
# Prepare the arm64 kernel oracle (crates/kernel-arm64): a Debian arm64 kernel booted under
# qemu-system-aarch64 with a static loader as /init. Idempotent: a rerun with everything
# in place touches no network and takes well under a second.
#
#   scripts/arm64-kernel.sh [--update]
#
# - apt-installs qemu-system-arm (qemu-system-aarch64), gcc-aarch64-linux-gnu and
#   libc6-dev-arm64-cross on the host when missing;
# - downloads the newest Debian arm64 kernel image package of the bookworm line (bookworm,
#   bookworm-backports, bookworm-security: Linux 6.12.x) with a private apt state (the host's dpkg
#   configuration is not changed: no foreign architecture is added), and extracts its
#   Image (Debian's arm64 vmlinuz is an uncompressed Image with an EFI stub, which
#   qemu -kernel boots as is). BPF, the BPF JIT and BPF_PROG_TEST_RUN are built in: no
#   modules are needed;
# - cross-compiles scripts/arm64-oracle/loader.c into a static binary.
#
# Cache: $KOPS_ARM64_CACHE, default target/arm64-oracle. It holds:
#   Image, config, VERSION (kernel release), PACKAGE (package name and version), loader,
#   apt/ (private apt state and downloaded .deb).
# The kernel is chosen once; --update looks for a newer one (the first run, or --update,
# needs deb.debian.org). KOPS_ARM64_KERNEL_PKG=linux-image-... picks a package by name.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$(realpath -m "${KOPS_ARM64_CACHE:-target/arm64-oracle}")
UPDATE=0
[ "${1:-}" = "--update" ] && UPDATE=1
mkdir -p "$CACHE"

# Host tools.
need=()
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
[ -f /usr/aarch64-linux-gnu/include/linux/bpf.h ] || need+=(libc6-dev-arm64-cross)
if [ ${#need[@]} -gt 0 ]; then
    echo "arm64-kernel: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null
    apt-get install -y -q -o DPkg::Lock::Timeout=600 "${need[@]}" >/dev/null
fi

# The kernel.
if [ ! -s "$CACHE/Image" ] || [ ! -s "$CACHE/VERSION" ] || [ $UPDATE = 1 ]; then
    A=$CACHE/apt
    mkdir -p "$A/state/lists/partial" "$A/cache/archives/partial" "$A/etc/preferences.d" "$A/debs"
    touch "$A/state/status"
    cat > "$A/etc/sources.list" <<'EOF'
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
EOF
    O=(-o APT::Architecture=arm64 -o APT::Architectures::=arm64
       -o Dir::State="$A/state" -o Dir::State::status="$A/state/status"
       -o Dir::Cache="$A/cache" -o Dir::Etc::sourcelist="$A/etc/sources.list"
       -o Dir::Etc::sourceparts=- -o Dir::Etc::preferencesparts="$A/etc/preferences.d"
       -o APT::Sandbox::User=root)
    echo "arm64-kernel: reading the arm64 package lists"
    apt-get "${O[@]}" update -q >/dev/null
    PKG=${KOPS_ARM64_KERNEL_PKG:-}
    if [ -z "$PKG" ]; then
        # The newest generic arm64 image of the bookworm line (its own -security and
        # -backports included): 6.12.x, the line of the host's linux-source-6.12, which
        # scripts/corpus.sh installs and the arm64 JIT follows.
        PKG=$(apt-cache "${O[@]}" pkgnames linux-image- | grep -E '^linux-image-[0-9][0-9.]*\+deb12-arm64$' \
              | sort -V | tail -1)
        [ -n "$PKG" ] || { echo "arm64-kernel: no linux-image-*+deb12-arm64 in the arm64 package lists" >&2; exit 1; }
    fi
    VER=$(apt-cache "${O[@]}" show "$PKG" | awk '/^Version:/ {print $2}' | sort -V | tail -1)
    if [ "$(cat "$CACHE/PACKAGE" 2>/dev/null)" != "$PKG $VER" ] || [ ! -s "$CACHE/Image" ]; then
        echo "arm64-kernel: downloading $PKG $VER"
        rm -f "$A/debs/"*.deb
        (cd "$A/debs" && apt-get "${O[@]}" download "$PKG=$VER" -q >/dev/null)
        DEB=$(ls "$A/debs/"*.deb)
        X=$A/extract
        rm -rf "$X"; mkdir -p "$X"
        dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$X" ./boot
        IMG=$(ls "$X"/boot/vmlinuz-*)
        REL=${IMG##*/vmlinuz-}
        # The Image qemu boots: uncompressed already in Debian's arm64 packages; a gzip
        # one (other distributions) is unpacked.
        if gzip -t "$IMG" 2>/dev/null; then gzip -dc "$IMG" > "$CACHE/Image.new"; else cp "$IMG" "$CACHE/Image.new"; fi
        cp "$X/boot/config-$REL" "$CACHE/config"
        for c in CONFIG_BPF_SYSCALL CONFIG_BPF_JIT CONFIG_NET; do
            grep -q "^$c=y" "$CACHE/config" || { echo "arm64-kernel: $PKG lacks $c=y" >&2; exit 1; }
        done
        mv "$CACHE/Image.new" "$CACHE/Image"
        echo "$REL" > "$CACHE/VERSION"
        echo "$PKG $VER" > "$CACHE/PACKAGE"
        rm -rf "$X" "$A/debs/"*.deb
    fi
fi

# The loader (rebuilt when its source changes).
SRC=$ROOT/scripts/arm64-oracle/loader.c
SUM=$(sha256sum "$SRC" | cut -d' ' -f1)
if [ ! -x "$CACHE/loader" ] || [ "$(cat "$CACHE/loader.sha256" 2>/dev/null)" != "$SUM" ]; then
    echo "arm64-kernel: building the loader"
    aarch64-linux-gnu-gcc -static -O2 -Wall -Wextra -Werror -o "$CACHE/loader.new" "$SRC"
    mv "$CACHE/loader.new" "$CACHE/loader"
    echo "$SUM" > "$CACHE/loader.sha256"
fi
echo "arm64-kernel: $(cat "$CACHE/PACKAGE") (Linux $(cat "$CACHE/VERSION")) in $CACHE"
