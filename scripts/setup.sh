#!/bin/sh
# Installs what a fresh Debian machine lacks to build and test Kops. Idempotent.
#   clang-19/llvm-19: BPF builds, llvm-objdump-19 comparisons, the native benchmark runtime
#   libbpf-dev: bpf/bpf_helpers.h for the clang-built test objects
#   libelf-dev, zlib1g-dev, pkg-config: libbpf (vendored by libbpf-sys) links them
#   bpftool: independent loader checks; z3: the equivalence prover; valgrind: callgrind
#   libbpf-tools: real CO-RE objects (embedded in its binaries) for the kops verify test
#   cmake: builds the unicorn emulator (crate unicorn-engine) that runs the arm64 JIT's code
set -eu
need=""
for p in clang-19 llvm-19 libbpf-dev libelf-dev zlib1g-dev pkg-config bpftool z3 valgrind build-essential libbpf-tools cmake; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
# apt-get download (libxdp1 tests) needs package lists even when nothing is missing.
if [ -n "$need" ] || [ -z "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v lock)" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    [ -z "$need" ] || apt-get install -y -qq $need >/dev/null
fi
# cargo-fuzz, for scripts/fuzz.sh (CI's bounded fuzz run); the nightly toolchain it needs
# is preinstalled on these machines (fuzz.sh fails loudly when it is not).
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# bpffs, for tests that pin programs.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
# The arm64 kernel oracle (crates/kernel-arm64): qemu-system-aarch64, the cross compiler,
# Debian's arm64 kernel and the static loader, cached in target/arm64-oracle (once).
"$(dirname "$0")/arm64-kernel.sh" || echo "setup: the arm64 kernel oracle could not be prepared (above); its tests print SKIPPED, and fail under KOPS_REQUIRE_KERNEL=1" >&2
