//! JIT a program as the kernel's verifier left it (`xlated`, from `BPF_OBJ_GET_INFO_BY_FD`),
//! so that our output can be compared with the kernel's jited image instruction for
//! instruction: every verifier rewrite (context access conversion, helper inlining,
//! divide guards, map pointers) is already in the input.
//!
//! The dump differs from what the JIT saw in a few encodings, undone here:
//! - a bpf-to-bpf call keeps its pc-relative target in `off` and the subprogram index in
//!   `imm` (`jit_subprogs`); we move `off` back to `imm`;
//! - map references are `ld_imm64 src=PSEUDO_MAP_FD/VALUE imm=map id`; the JIT saw a
//!   kernel address, so we load a kernel-looking 64-bit constant (same `movabs` encoding);
//! - helper calls keep `imm = func - __bpf_call_base`; any address does (rel32 is fixed size).

use kops_isa::{op, Insn};

use kops_jit::Resolver;

/// Undo the dump encodings (see the module comment).
///
/// `fd_array`: the program was loaded with map references in fd_array form
/// (`PSEUDO_MAP_IDX`/`IDX_VALUE`). A program with subprograms is JITed (`jit_subprogs`)
/// before the verifier clears `ld_imm64`'s `src_reg` (`convert_pseudo_ld_imm64` runs
/// later), and the JIT's `detect_reg_usage` reads every `src_reg` field: an
/// `IDX_VALUE` (6) reference then counts as a use of r6 and rbx is saved. The dump shows
/// those as `MAP_VALUE` (2) / `MAP_FD` (1); we put the original values back so our JIT sees
/// what the kernel's saw. Single-function programs are JITed after the clearing
/// (their 1/2 stay: neither names a callee-saved register).
pub fn prepare(xlated: &[Insn], fd_array: bool) -> Vec<Insn> {
    let second = kops_jit::fixup::second_slots(xlated);
    let multi = xlated.iter().enumerate().any(|(pc, i)| {
        !second[pc] && ((i.is_call() && i.src == op::PSEUDO_CALL) || (i.is_ld_imm64() && i.src == op::PSEUDO_FUNC))
    });
    xlated
        .iter()
        .enumerate()
        .map(|(pc, i)| {
            let mut i = *i;
            if second[pc] {
                return i;
            }
            if i.is_call() && i.src == op::PSEUDO_CALL {
                i.imm = i.off as i32;
                i.off = 0;
            }
            if i.is_ld_imm64() && matches!(i.src, op::PSEUDO_MAP_FD | op::PSEUDO_MAP_VALUE) {
                i.src = match (multi, fd_array, i.src) {
                    (true, true, op::PSEUDO_MAP_FD) => op::PSEUDO_MAP_IDX,
                    (true, true, _) => op::PSEUDO_MAP_IDX_VALUE,
                    (true, false, s) => s,
                    (false, _, s) => s,
                };
            }
            i
        })
        .collect()
}

/// Resolves everything to kernel-looking addresses.
pub struct XlatedResolver;

/// Where the fake kernel objects live (direct map, like real `struct bpf_map` pointers).
pub const FAKE_MAP_BASE: u64 = 0xffff_8881_0000_0000;
pub const FAKE_TEXT_BASE: u64 = 0xffff_ffff_8100_0000;

impl Resolver for XlatedResolver {
    fn helper(&self, id: i32) -> Option<u64> {
        Some(FAKE_TEXT_BASE.wrapping_add(id as i64 as u64))
    }
    fn ld_imm64(&self, _pc: usize, lo: &Insn, hi: &Insn) -> Result<u64, String> {
        Ok(FAKE_MAP_BASE + ((lo.imm as u32 as u64) << 12) + hi.imm as u32 as u64)
    }
}

/// Tail calls whose key the verifier knows to be constant (on every path) with a known
/// map: the kernel compiles those as direct, patchable jumps (`emit_bpf_tail_call_direct`).
/// A forward constant propagation over `insns` (prepared); `tail_call` is the helper id.
/// The kernel also requires the key to be below the map's `max_entries`, which the dump
/// does not tell; keys are assumed in range.
pub fn direct_tail_calls(insns: &[Insn], tail_call: i32) -> Vec<usize> {
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum C {
        Unknown,
        Const(u64),
        Map(u8, i32, i32),
    }
    let join = |a: C, b: C| if a == b { a } else { C::Unknown };
    let second = kops_jit::fixup::second_slots(insns);
    let n = insns.len();
    let mut state: Vec<Option<[C; 11]>> = vec![None; n];
    if n == 0 {
        return Vec::new();
    }
    // Every function entry (main and call targets) starts unknown.
    let mut work = vec![0usize];
    state[0] = Some([C::Unknown; 11]);
    for (pc, i) in insns.iter().enumerate() {
        if !second[pc] && i.is_pseudo_call() {
            let t = (pc as i64 + 1 + i.imm as i64) as usize;
            if t < n && state[t].is_none() {
                state[t] = Some([C::Unknown; 11]);
                work.push(t);
            }
        }
    }
    let mut direct = std::collections::BTreeSet::new();
    let mut indirect = std::collections::BTreeSet::new();
    let mut steps = 0;
    while let Some(pc) = work.pop() {
        steps += 1;
        if steps > 1_000_000 {
            return Vec::new();
        }
        let mut s = state[pc].unwrap();
        let i = insns[pc];
        let mut succ = vec![];
        let get = |s: &[C; 11], r: u8| s.get(r as usize).copied().unwrap_or(C::Unknown);
        match i.class() {
            op::ALU | op::ALU64 => {
                let is64 = i.class() == op::ALU64;
                let d = get(&s, i.dst);
                let src = if i.source() == op::X { get(&s, i.src) } else if is64 { C::Const(i.imm as i64 as u64) } else { C::Const(i.imm as u32 as u64) };
                let v = match (i.op(), d, src) {
                    (op::MOV, _, v) if i.off == 0 => match (is64, v) {
                        (true, v) => v,
                        (false, C::Const(x)) => C::Const(x as u32 as u64),
                        _ => C::Unknown,
                    },
                    (o, C::Const(a), C::Const(b)) if i.off == 0 => {
                        let r = match o {
                            op::ADD => Some(a.wrapping_add(b)),
                            op::SUB => Some(a.wrapping_sub(b)),
                            op::AND => Some(a & b),
                            op::OR => Some(a | b),
                            op::XOR => Some(a ^ b),
                            op::MUL => Some(a.wrapping_mul(b)),
                            op::LSH => Some(a.wrapping_shl(b as u32 & if is64 { 63 } else { 31 })),
                            op::RSH if is64 => Some(a >> (b & 63)),
                            op::RSH => Some((a as u32 >> (b & 31)) as u64),
                            _ => None,
                        };
                        match r {
                            Some(r) if is64 => C::Const(r),
                            Some(r) => C::Const(r as u32 as u64),
                            None => C::Unknown,
                        }
                    }
                    _ => C::Unknown,
                };
                if (i.dst as usize) < 11 {
                    s[i.dst as usize] = v;
                }
                succ.push(pc + 1);
            }
            op::LD if i.is_ld_imm64() => {
                let hi = insns.get(pc + 1).copied().unwrap_or_default();
                let v = if i.src == 0 { C::Const((hi.imm as u32 as u64) << 32 | i.imm as u32 as u64) } else { C::Map(i.src, i.imm, hi.imm) };
                if (i.dst as usize) < 11 {
                    s[i.dst as usize] = v;
                }
                succ.push(pc + 2);
            }
            op::JMP | op::JMP32 => {
                if i.is_exit() {
                } else if i.is_call() || i.code == op::JMP | op::CALL | op::X {
                    if i.is_helper_call() && i.imm == tail_call {
                        match (get(&s, 2), get(&s, 3)) {
                            (C::Map(..), C::Const(_)) => direct.insert(pc),
                            _ => indirect.insert(pc),
                        };
                    }
                    for v in s.iter_mut().take(6) {
                        *v = C::Unknown;
                    }
                    succ.push(pc + 1);
                } else {
                    if let Some(t) = i.target(pc) {
                        if t >= 0 {
                            succ.push(t as usize);
                        }
                    }
                    if i.is_cond_jump() {
                        succ.push(pc + 1);
                    }
                }
            }
            op::LDX => {
                if (i.dst as usize) < 11 {
                    s[i.dst as usize] = C::Unknown;
                }
                succ.push(pc + 1);
            }
            op::STX if i.mode() == op::ATOMIC => {
                if i.imm & op::FETCH != 0 && (i.src as usize) < 11 {
                    s[i.src as usize] = C::Unknown;
                }
                if i.imm == op::CMPXCHG {
                    s[0] = C::Unknown;
                }
                succ.push(pc + 1);
            }
            _ => succ.push(pc + 1),
        }
        for t in succ {
            if t >= n || second[t] {
                continue;
            }
            let merged = match state[t] {
                None => s,
                Some(old) => {
                    let mut m = old;
                    for (r, v) in m.iter_mut().enumerate() {
                        *v = join(old[r], s[r]);
                    }
                    m
                }
            };
            if state[t] != Some(merged) {
                state[t] = Some(merged);
                work.push(t);
            }
        }
    }
    // A site seen with a non-constant key on some visit is indirect.
    direct.difference(&indirect).copied().collect()
}
