#!/bin/sh
# The trusted base of Kops, file by file, with line counts (see docs/TRUST.md).
#
#   scripts/trust-lines.sh           print "lines path" per trusted file and the total
#   scripts/trust-lines.sh --table   print the Markdown table of docs/TRUST.md
#   scripts/trust-lines.sh --update  rewrite that table in docs/TRUST.md in place
#
# The list below is the definition: a file is trusted when it is named here. Op files are
# found, not listed: every file under crates/einsn/src that defines an `emit_x86`.
set -eu
cd "$(dirname "$0")/.."

# path|why (one line each; the table's second column).
list() {
    cat <<'EOF'
crates/x86/src/lib.rs|The encoder: every native byte the JIT and the emits produce is written here (iced-x86 round-trip tests in `crates/x86/src/tests.rs`).
crates/x86/src/features.rs|Which CPU features (BMI2, MOVBE, POPCNT, ...) code may use; a wrong answer runs an instruction the CPU lacks.
crates/jit/src/lib.rs|Register map, options, linking (rel32 relocations, absolute slots); `compile_kinsn`, the only way emitted kinsn code enters an image.
crates/jit/src/x64/mod.rs|The JIT's pipeline: input checks, function split, size-convergence loop, final layout, slot ranges.
crates/jit/src/x64/alu.rs|Lowering of `ALU`/`ALU64` (divide and shift register shuffles).
crates/jit/src/x64/jmp.rs|Lowering of jumps and `exit` (jump offsets, padding).
crates/jit/src/x64/mem.rs|Lowering of loads, stores, atomics, `ld_imm64`, legacy packet loads.
crates/jit/src/x64/call.rs|Prologue, calls, tail calls (counter, frame teardown), runtime stubs.
crates/jit/src/fixup.rs|The verifier's divide/modulo guards for programs that did not go through the kernel.
crates/jit/src/stack.rs|Stack layout: the frame size per function; too small a frame lets a program write below it.
crates/jit/src/exec.rs|W^X executable memory: code is never writable once executable.
crates/kinsn/src/lib.rs|The `KinsnOp` contract and the registry the JIT looks ops up in.
crates/kinsn/src/transport.rs|Decoding a site (op id, payload) from its sidecar + call pair.
crates/kinsn/src/lower.rs|Lowering/restore: the proof sequence the verifier checks, and the slot range the native code replaces.
crates/kinsn/src/live.rs|`dead_after`: the registers a native emit may leave different from its proof sequence.
crates/kinsn/src/validate.rs|Shape checks on proof sequences that the register effects of a site rely on.
crates/kinsn/src/payload.rs|Payload field codec and errors every op's validation uses.
crates/kinsn/src/x86.rs|The checked emit: register-map sanity, payload validation, the op's size bound, the fallback rule.
crates/analysis/src/lib.rs|CFG and liveness behind `dead_after`; subprogram boundaries.
crates/analysis/src/funcs.rs|Function starts and tail-call reachability, which decide the JIT's prologues.
crates/isa/src/lib.rs|The instruction model the JIT reads and the encoding the kernel verifier is given: they must describe the same program.
crates/isa/src/op.rs|Opcode constants shared by the JIT, the lowering and the encoding.
crates/einsn/src/lib.rs|Adapter from each op to `KinsnOp`: validates every payload before its emit runs.
crates/vm/src/verify.rs|The gate: native engines compile only images sealed with a `Verified` token.
crates/kernel/src/verifier.rs|The running kernel's verifier on the lowered program, and the verdict cache key.
crates/arm64/src/lib.rs|The AArch64 encoder: every word the arm64 JIT emits is written here (yaxpeax-arm round-trip tests in `crates/arm64/src/tests.rs`).
crates/jit-arm64/src/lib.rs|The arm64 JIT: register map, prologue/epilogue, lowering per instruction, tail calls, linking of subprogram addresses.
EOF
    for f in $(grep -rl 'fn emit_x86' crates/einsn/src --include='*.rs' | sort); do
        case "$f" in
        crates/einsn/src/lib.rs) ;;
        *) echo "$f|Native emit (\`emit_x86\`) with the payload decoding it reads; each one checked by \`kops prove\`." ;;
        esac
    done
}

lines() { wc -l <"$1" | tr -d ' '; }

table() {
    echo "| file | lines | why it is trusted |"
    echo "|---|---:|---|"
    total=0
    list | while IFS='|' read -r f why; do
        [ -f "$f" ] || { echo "trust-lines: $f is listed but missing" >&2; exit 1; }
        echo "| \`$f\` | $(lines "$f") | $why |"
    done
    for f in $(list | cut -d'|' -f1); do total=$((total + $(lines "$f"))); done
    echo "| **total** | **$total** | |"
}

case "${1:-}" in
--table) table ;;
--update)
    t=$(mktemp)
    table >"$t"
    awk -v tf="$t" '
        /<!-- trust-lines:begin -->/ { print; while ((getline l < tf) > 0) print l; skip = 1; next }
        /<!-- trust-lines:end -->/ { skip = 0 }
        !skip { print }
    ' docs/TRUST.md >"$t.new"
    mv "$t.new" docs/TRUST.md
    rm -f "$t"
    ;;
"")
    total=0
    for f in $(list | cut -d'|' -f1); do
        n=$(lines "$f")
        total=$((total + n))
        printf '%6d %s\n' "$n" "$f"
    done
    printf '%6d total\n' "$total"
    ;;
*) echo "usage: $0 [--table|--update]" >&2; exit 2 ;;
esac
