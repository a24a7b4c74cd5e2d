//! A small forward analysis of what kind of memory each register may point to.
//!
//! Only what the bulk-copy overlap check and the wide-load alignment check need: stack
//! pointers with a known frame offset, map-value pointers with a known offset into the
//! value (map values are 8-byte aligned in the kernel), and "not the stack" (the context
//! and everything loaded through it, e.g. packet pointers). Anything else is `Unknown`,
//! which every user treats as "could be anything".

use kops_analysis::Analysis;
use kops_isa::{op, Insn};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `r10 + off` (off known or not).
    Stack(Option<i64>),
    /// Pointer into a map value at a known offset (8-byte aligned base).
    MapValue(Option<i64>),
    /// The program context (r1 at entry of the main function).
    Ctx,
    /// A packet pointer (`data`/`data_meta` loaded from an XDP or skb context, plus offsets).
    Packet,
    /// A value derived from memory that can never hold a stack pointer.
    NotStack,
    /// A known scalar constant (hoisted masks, zero registers of zero-store runs).
    Const(u64),
    /// A scalar whose upper 32 bits are zero (result of a 32-bit operation or a narrow load).
    Zext32,
    Unknown,
}

impl Kind {
    fn join(self, o: Kind) -> Kind {
        use Kind::*;
        match (self, o) {
            (a, b) if a == b => a,
            (Stack(_), Stack(_)) => Stack(None),
            (MapValue(_), MapValue(_)) => MapValue(None),
            (NotStack | Ctx | Packet | MapValue(_), NotStack | Ctx | Packet | MapValue(_)) => NotStack,
            (Zext32, Zext32) => Zext32,
            (Zext32, Const(c)) | (Const(c), Zext32) if c <= u32::MAX as u64 => Zext32,
            (Const(a), Const(b)) if a <= u32::MAX as u64 && b <= u32::MAX as u64 => Zext32,
            _ => Unknown,
        }
    }
    fn add(self, k: Option<i64>) -> Kind {
        match self {
            Kind::Stack(o) => Kind::Stack(o.zip(k).map(|(a, b)| a + b)),
            Kind::MapValue(o) => Kind::MapValue(o.zip(k).map(|(a, b)| a + b)),
            Kind::Packet => Kind::Packet,
            Kind::Ctx | Kind::NotStack => Kind::NotStack,
            Kind::Const(_) | Kind::Zext32 | Kind::Unknown => Kind::Unknown,
        }
    }
    /// Known to have its upper 32 bits zero.
    pub fn is_zext32(self) -> bool {
        match self {
            Kind::Zext32 => true,
            Kind::Const(c) => c <= u32::MAX as u64,
            _ => false,
        }
    }
    pub fn is_stack(self) -> bool {
        matches!(self, Kind::Stack(_))
    }
    /// Memory behind `self` and behind `o` can never overlap (different regions).
    pub fn disjoint_regions(self, o: Kind) -> bool {
        use Kind::*;
        let kernel = |k: Kind| matches!(k, MapValue(_) | NotStack | Ctx | Packet);
        (self.is_stack() && kernel(o)) || (kernel(self) && o.is_stack())
    }
}

pub type State = [Kind; 11];

/// `bpf_map_lookup_elem`.
const HELPER_MAP_LOOKUP: i32 = 1;

/// Context offsets that hold packet pointers (`data`, `data_meta`) for a program type.
pub fn packet_fields(t: kops_object::ProgType) -> &'static [i16] {
    use kops_object::ProgType::*;
    match t {
        Xdp => &[0, 8],                                    // struct xdp_md
        SchedCls | SchedAct | SocketFilter | CgroupSkb => &[76, 140], // struct __sk_buff
        _ => &[],
    }
}

/// Registers a kinsn site (call at `pc`) writes, when known.
pub type SiteDefs<'a> = &'a dyn Fn(usize) -> Option<kops_analysis::RegSet>;

fn step(st: &mut State, insns: &[Insn], pc: usize, pkt: &[i16], site_defs: SiteDefs) {
    let i = insns[pc];
    let d = i.dst as usize;
    if d > 10 {
        return;
    }
    match i.class() {
        op::ALU64 if !i.is_kinsn_sidecar() => match (i.op(), i.source()) {
            (op::MOV, op::X) if i.off == 0 => st[d] = st.get(i.src as usize).copied().unwrap_or(Kind::Unknown),
            (op::ADD, op::K) => st[d] = st[d].add(Some(i.imm as i64)),
            (op::SUB, op::K) => st[d] = st[d].add(Some(-(i.imm as i64))),
            (op::ADD, op::X) | (op::SUB, op::X) if st[d] != Kind::Unknown => st[d] = st[d].add(None),
            (op::MOV, op::K) => st[d] = Kind::Const(i.imm as i64 as u64),
            (op::AND, op::K) if i.imm >= 0 => st[d] = Kind::Zext32,
            (op::RSH, op::K) if i.imm >= 32 => st[d] = Kind::Zext32,
            (op::END, _) if i.imm <= 32 => st[d] = Kind::Zext32,
            _ => st[d] = Kind::Unknown,
        },
        op::ALU | op::ALU64 => {
            if !i.is_kinsn_sidecar() {
                let mov_k = i.class() == op::ALU && i.op() == op::MOV && i.source() == op::K;
                st[d] = if mov_k {
                    Kind::Const(i.imm as u32 as u64)
                } else if i.class() == op::ALU && !(i.op() == op::END && i.imm == 64) {
                    Kind::Zext32 // 32-bit operations zero-extend
                } else {
                    Kind::Unknown
                };
            }
        }
        op::LDX => {
            let base = st.get(i.src as usize).copied().unwrap_or(Kind::Unknown);
            // The stack may hold spilled stack pointers; kernel memory never does.
            let narrow = i.mode() == op::MEM && i.size() != op::DW;
            st[d] = match base {
                Kind::Ctx if i.size() == op::W && pkt.contains(&i.off) => Kind::Packet,
                Kind::Ctx => Kind::NotStack,
                _ if narrow => Kind::Zext32,
                Kind::Packet | Kind::NotStack | Kind::MapValue(_) => Kind::NotStack,
                _ => Kind::Unknown,
            };
        }
        op::LD => {
            if i.is_ld_imm64() {
                st[d] = match i.src {
                    op::PSEUDO_MAP_VALUE | op::PSEUDO_MAP_IDX_VALUE => {
                        let off = insns.get(pc + 1).map(|n| n.imm as u32 as i64);
                        Kind::MapValue(off)
                    }
                    0 => {
                        let hi = insns.get(pc + 1).map(|n| n.imm as u32 as u64).unwrap_or(0);
                        Kind::Const((i.imm as u32 as u64) | (hi << 32))
                    }
                    _ => Kind::Unknown,
                };
            } else if i.mode() == op::ABS || i.mode() == op::IND {
                for k in st.iter_mut().take(6) {
                    *k = Kind::Unknown;
                }
            }
        }
        op::STX if i.mode() == op::ATOMIC => {
            let e = kops_analysis::effects(&i);
            for r in e.defs.iter().filter(|&r| r < 10) {
                st[r as usize] = Kind::Unknown;
            }
        }
        op::JMP if i.op() == op::CALL && i.is_kinsn_call() => {
            // A kinsn site writes its defined registers (scalars); unknown sites: all.
            let defs = site_defs(pc).unwrap_or(kops_analysis::RegSet(0x3ff));
            for r in defs.iter().filter(|&r| r < 10) {
                st[r as usize] = Kind::Unknown;
            }
        }
        op::JMP if i.op() == op::CALL => {
            for k in st.iter_mut().take(6) {
                *k = Kind::Unknown;
            }
            if i.src == 0 && i.imm == HELPER_MAP_LOOKUP {
                st[0] = Kind::MapValue(Some(0));
            }
        }
        _ => {}
    }
    st[10] = Kind::Stack(Some(0));
}

/// Pointer kinds before every slot (`pkt`: see [`packet_fields`]). Subprograms reached by
/// bpf-to-bpf calls start with the join of r1-r5 over their call sites (a caller's stack
/// pointer stays "stack" but loses its offset: the callee has its own frame).
pub fn analyse(insns: &[Insn], a: &Analysis, pkt: &[i16], site_defs: SiteDefs) -> Vec<State> {
    let nb = a.blocks.len();
    let mut entry: Vec<Option<State>> = vec![None; nb];
    let mut init = [Kind::Unknown; 11];
    init[10] = Kind::Stack(Some(0));
    for &s in &a.subprog_starts {
        if s == 0 {
            let mut st = init;
            st[1] = Kind::Ctx;
            entry[a.block_of[s]] = Some(st);
        } else if !a.call_targets.contains(&s) {
            entry[a.block_of[s]] = Some(init);
        }
    }
    let join = |old: Option<State>, new: State| -> State {
        match old {
            None => new,
            Some(o) => std::array::from_fn(|r| o[r].join(new[r])),
        }
    };
    let mut work: Vec<usize> = (0..nb).rev().collect();
    let mut out = vec![[Kind::Unknown; 11]; insns.len()];
    let mut iterations = 0usize;
    while let Some(b) = work.pop() {
        iterations += 1;
        if iterations > 50 * nb + 1000 {
            break; // the lattice is tiny; this only guards against a bug looping forever
        }
        let Some(mut st) = entry[b] else { continue };
        let blk = &a.blocks[b];
        for pc in blk.start..blk.end {
            out[pc] = st;
            if !a.insn_start[pc] {
                continue;
            }
            if insns[pc].is_pseudo_call() {
                if let Some(t) = insns[pc].target(pc).filter(|&t| t >= 0 && (t as usize) < insns.len()) {
                    let mut args = init;
                    for r in 1..=5 {
                        args[r] = match st[r] {
                            Kind::Stack(_) => Kind::Stack(None),
                            k => k,
                        };
                    }
                    let cb = a.block_of[t as usize];
                    let new = join(entry[cb], args);
                    if entry[cb] != Some(new) {
                        entry[cb] = Some(new);
                        work.push(cb);
                    }
                }
            }
            step(&mut st, insns, pc, pkt, site_defs);
        }
        for &s in &blk.succs {
            if a.is_subprog_start(a.blocks[s].start) {
                continue;
            }
            let new = join(entry[s], st);
            if entry[s] != Some(new) {
                entry[s] = Some(new);
                work.push(s);
            }
        }
    }
    out
}
