//! The symbolic x86-64 model ([`crate::x86`]) checked against this CPU.
//!
//! A *form* is an iced-x86 `Code` (mnemonic, operand shapes and sizes, encoding) with its
//! r/m operand as a register or as memory, and `rep` for string instructions. The forms are
//! every 64-bit-mode `Code` whose instance the model accepts, found by building an instance
//! of every `Code` and asking the model; so a form added to the model is checked without
//! anyone listing it. The forms the native emits produce (decoded from every op's emits
//! over its payload classes) must be among them, and their exact instructions are
//! instances too.
//!
//! Per form: random instances (registers, addressing, immediates, branch targets), each
//! run on the CPU from random states and evaluated by the model on the same states; every
//! register, ZF/SF/CF/OF (where the model defines them), DF and the bytes of the data and
//! stack regions are compared. The model's SMT terms are evaluated by
//! [`crate::concrete`], cross-checked against z3's `simplify` on a sample of states.

use crate::concrete::{Program, Val};
use crate::cpu::{Cpu, CpuState, REGION, SETTABLE_FLAGS};
use crate::smt::{self, Bv, Smt};
use crate::x86::{self, X86State};
use crate::X86_NAMES;
use iced_x86::{
    Code, Decoder, DecoderOptions, Encoder, Instruction, Mnemonic, OpCodeOperandKind as K, OpKind, Register,
    RepPrefixKind,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

#[derive(Clone, Debug)]
pub struct Options {
    /// States per form (spread over the form's instances).
    pub states: usize,
    pub seed: u64,
    /// States per form also evaluated by z3, to check the concrete evaluator.
    pub z3_sample: usize,
    /// Worker threads (each with its own scratch memory and z3).
    pub jobs: usize,
    /// Test hook: change the CPU's result before comparing (the checker must then report).
    pub perturb: Option<fn(&mut CpuState)>,
}

impl Default for Options {
    fn default() -> Options {
        Options { states: 1000, seed: 0x6b6f_7073_6d6f_64, z3_sample: 8, jobs: 2, perturb: None }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FormKey {
    pub code: Code,
    /// The instruction has a memory operand (for r/m operands: the memory variant).
    pub mem: bool,
    /// String instruction with a `rep` prefix.
    pub rep: bool,
}

#[derive(Clone, Debug)]
pub struct Form {
    pub key: FormKey,
    pub name: String,
    /// Some native emit produces this form.
    pub in_emits: bool,
    /// Distinct emitted instructions of this form (a sample), used as instances.
    pub emitted: Vec<Vec<u8>>,
}

/// The forms of the model and what the enumeration could not cover.
#[derive(Clone, Debug)]
pub struct FormSet {
    pub forms: Vec<Form>,
    /// Codes with a mnemonic the model handles for which no instance could be built, so
    /// the model was never asked about them (a gap in this checker: must be empty).
    pub unbuilt: Vec<String>,
    /// Forms the emits produce that the model does not accept (must be empty: `kops
    /// prove` would fail on them).
    pub emitted_outside_model: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Disagreement {
    pub form: String,
    /// The instruction(s) run, as text and bytes.
    pub code: String,
    pub state: String,
    pub cpu: String,
    pub model: String,
    pub differs: Vec<String>,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "form {}: {}", self.form, self.code)?;
        writeln!(f, "  differs: {}", self.differs.join("; "))?;
        writeln!(f, "  state: {}", self.state)?;
        writeln!(f, "  cpu:   {}", self.cpu)?;
        write!(f, "  model: {}", self.model)
    }
}

#[derive(Clone, Debug)]
pub struct FormReport {
    pub name: String,
    pub in_emits: bool,
    pub instances: usize,
    pub states: usize,
    /// States also evaluated by z3.
    pub z3_states: usize,
    /// Every disagreeing state counts; only the first few are kept in full.
    pub disagreements: usize,
    pub examples: Vec<Disagreement>,
}

const KEEP_EXAMPLES: usize = 3;

// ---------------------------------------------------------------------------------------
// Random numbers: a fixed generator, so a run is reproducible from its seed.

pub use kops_rng::Rng;

/// The checker's value distribution on top of the project's generator.
trait BoundaryValues {
    fn value(&mut self) -> u64;
}

impl BoundaryValues for Rng {
    /// A register or immediate value: uniform, or one at a boundary of some width, so
    /// carries, overflows, zero results and equal operands all happen often.
    fn value(&mut self) -> u64 {
        match self.below(8) {
            0..=3 => self.next(),
            4 => self.below(300),
            5 => {
                let w = self.pick(&[8u32, 16, 32, 64]);
                let top = 1u64 << (w - 1);
                let v = self.pick(&[0, 1, top - 1, top, top.wrapping_mul(2).wrapping_sub(1)]);
                if self.below(2) == 0 {
                    v
                } else {
                    v | (self.next() & !(top.wrapping_mul(2).wrapping_sub(1)))
                }
            }
            6 => (self.below(256) as i64 - 128) as u64,
            _ => u64::MAX - self.below(4),
        }
    }
}

fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Initial memory: byte at `addr` of a state with memory seed `seed`. The CPU's regions are
/// filled with it and the model (here and in the z3 cross-check) reads the same function.
pub fn mem_byte(addr: u64, seed: u64) -> u8 {
    ((addr ^ seed).wrapping_mul(MEM_MUL) >> 56) as u8
}
const MEM_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

// ---------------------------------------------------------------------------------------
// Instances: an encodable instruction of a form (plus filler for a branch to skip).

fn regs(pred: fn(Register) -> bool) -> Vec<Register> {
    Register::values().filter(|r| pred(*r)).collect()
}

struct Regs {
    r8: Vec<Register>,
    r16: Vec<Register>,
    r32: Vec<Register>,
    r64: Vec<Register>,
}

impl Regs {
    fn new() -> Regs {
        Regs { r8: regs(Register::is_gpr8), r16: regs(Register::is_gpr16), r32: regs(Register::is_gpr32), r64: regs(Register::is_gpr64) }
    }
}

/// Where instances may point absolute (moffs) addresses.
#[derive(Clone, Copy)]
struct Ctx {
    data: u64,
}

fn is_string(code: Code) -> bool {
    use Mnemonic::*;
    matches!(
        code.mnemonic(),
        Movsb | Movsw | Movsd | Movsq | Stosb | Stosw | Stosd | Stosq | Lodsb | Lodsw | Lodsd | Lodsq | Scasb
            | Scasw | Scasd | Scasq | Cmpsb | Cmpsw | Cmpsd | Cmpsq | Insb | Insw | Insd | Outsb | Outsw | Outsd
    ) && code.op_code().op_kinds().iter().any(|k| matches!(k, K::seg_rSI | K::es_rDI) || code.op_code().op_count() == 0)
}

fn string_insn(code: Code, rep: bool) -> Option<Instruction> {
    use Code::*;
    let r = if rep { RepPrefixKind::Repe } else { RepPrefixKind::None };
    let n = Register::None;
    let i = match code {
        Movsb_m8_m8 => Instruction::with_movsb(64, n, r),
        Movsw_m16_m16 => Instruction::with_movsw(64, n, r),
        Movsd_m32_m32 => Instruction::with_movsd(64, n, r),
        Movsq_m64_m64 => Instruction::with_movsq(64, n, r),
        Stosb_m8_AL => Instruction::with_stosb(64, r),
        Stosw_m16_AX => Instruction::with_stosw(64, r),
        Stosd_m32_EAX => Instruction::with_stosd(64, r),
        Stosq_m64_RAX => Instruction::with_stosq(64, r),
        Lodsb_AL_m8 => Instruction::with_lodsb(64, n, r),
        Lodsw_AX_m16 => Instruction::with_lodsw(64, n, r),
        Lodsd_EAX_m32 => Instruction::with_lodsd(64, n, r),
        Lodsq_RAX_m64 => Instruction::with_lodsq(64, n, r),
        Scasb_AL_m8 => Instruction::with_scasb(64, r),
        Scasw_AX_m16 => Instruction::with_scasw(64, r),
        Scasd_EAX_m32 => Instruction::with_scasd(64, r),
        Scasq_RAX_m64 => Instruction::with_scasq(64, r),
        Cmpsb_m8_m8 => Instruction::with_cmpsb(64, n, r),
        Cmpsw_m16_m16 => Instruction::with_cmpsw(64, n, r),
        Cmpsd_m32_m32 => Instruction::with_cmpsd(64, n, r),
        Cmpsq_m64_m64 => Instruction::with_cmpsq(64, n, r),
        Insb_m8_DX => Instruction::with_insb(64, r),
        Insw_m16_DX => Instruction::with_insw(64, r),
        Insd_m32_DX => Instruction::with_insd(64, r),
        Outsb_DX_m8 => Instruction::with_outsb(64, n, r),
        Outsw_DX_m16 => Instruction::with_outsw(64, n, r),
        Outsd_DX_m32 => Instruction::with_outsd(64, n, r),
        _ => return None,
    };
    i.ok()
}

fn encode(ins: &Instruction) -> Option<Vec<u8>> {
    let mut e = Encoder::new(64);
    e.encode(ins, 0).ok()?;
    Some(e.take_buffer())
}

fn set_mem(ins: &mut Instruction, i: u32, rng: &mut Rng, regs: &Regs) {
    ins.set_op_kind(i, OpKind::Memory);
    let base = if rng.below(8) == 0 { Register::None } else { rng.pick(&regs.r64) };
    let mut index = if rng.below(2) == 0 { Register::None } else { rng.pick(&regs.r64) };
    if index == Register::RSP || index == base {
        index = Register::None;
    }
    if base == Register::None && index == Register::None {
        index = Register::RBX;
    }
    let scale = if index == Register::None { 1 } else { rng.pick(&[1, 2, 4, 8]) };
    // rsp-based operands address the stack region around rsp: keep the displacement small.
    let disp: i64 = if base == Register::RSP {
        rng.below(97) as i64 - 48
    } else {
        match rng.below(3) {
            0 => 0,
            1 => rng.below(256) as i64 - 128,
            _ => rng.next() as i32 as i64,
        }
    };
    ins.set_memory_base(base);
    ins.set_memory_index(index);
    ins.set_memory_index_scale(scale);
    ins.set_memory_displacement64(disp as u64);
    ins.set_memory_displ_size(if base == Register::None {
        4
    } else if disp == 0 {
        0
    } else {
        1
    });
}

/// Build one random instance of `key` (bytes), or `None` when this attempt does not encode
/// or decodes as another form.
fn build(key: FormKey, rng: &mut Rng, regs: &Regs, ctx: Ctx) -> Option<Vec<u8>> {
    build_why(key, rng, regs, ctx).ok()
}

enum NotBuilt {
    /// No instance of this shape can be made (operand kind unknown here, encoder refused).
    Cannot,
    /// It encodes, but the decoder (the model's) reads the bytes as another form, so the
    /// model never sees this one (e.g. `o16 jcc` decoded as the 64-bit jcc).
    DecodesAs,
}

fn build_why(key: FormKey, rng: &mut Rng, regs: &Regs, ctx: Ctx) -> Result<Vec<u8>, NotBuilt> {
    let bytes = build_bytes(key, rng, regs, ctx).ok_or(NotBuilt::Cannot)?;
    let first = x86::decode(&bytes).ok().and_then(|d| d.into_iter().next()).ok_or(NotBuilt::DecodesAs)?;
    if form_key(&first) == key {
        Ok(bytes)
    } else {
        Err(NotBuilt::DecodesAs)
    }
}

fn build_bytes(key: FormKey, rng: &mut Rng, regs: &Regs, ctx: Ctx) -> Option<Vec<u8>> {
    let code = key.code;
    let oc = code.op_code();
    let bytes = if is_string(code) {
        encode(&string_insn(code, key.rep)?)?
    } else if oc.op_kinds().iter().any(|k| matches!(k, K::br64_1 | K::br64_4)) {
        branch(code, rng, regs)?
    } else if let Some(&k) = oc.op_kinds().iter().find(|k| matches!(k, K::br16_1 | K::br16_2)) {
        // The encoder refuses `o16 jcc/jmp` in 64-bit code; its bytes are simple: a 0x66
        // prefix, the opcode and a zero displacement (a jump to the next instruction).
        let mut b = vec![0x66];
        if oc.table() == iced_x86::OpCodeTableKind::T0F {
            b.push(0x0f);
        }
        b.push(oc.op_code() as u8);
        b.extend(std::iter::repeat(0).take(if k == K::br16_1 { 1 } else { 2 }));
        b
    } else {
        let mut ins = Instruction::with(code);
        let mut imm8_done = false;
        for i in 0..oc.op_count() {
            let k = oc.op_kind(i);
            let reg = |ins: &mut Instruction, r: Register| {
                ins.set_op_kind(i, OpKind::Register);
                ins.set_op_register(i, r);
            };
            match k {
                K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem | K::r32_or_mem_mpx | K::r64_or_mem_mpx
                | K::r16_reg_mem | K::r32_reg_mem | K::r64_reg_mem
                    if key.mem =>
                {
                    set_mem(&mut ins, i, rng, regs)
                }
                K::mm_or_mem | K::xmm_or_mem | K::ymm_or_mem | K::zmm_or_mem | K::k_or_mem | K::bnd_or_mem_mpx
                    if key.mem =>
                {
                    set_mem(&mut ins, i, rng, regs)
                }
                K::mem | K::mem_mpx | K::mem_mib | K::sibmem => set_mem(&mut ins, i, rng, regs),
                K::mem_offs => {
                    ins.set_op_kind(i, OpKind::Memory);
                    ins.set_memory_base(Register::None);
                    ins.set_memory_index(Register::None);
                    ins.set_memory_displacement64(ctx.data + 64 + rng.below(120));
                    ins.set_memory_displ_size(8);
                }
                K::r8_or_mem | K::r8_reg | K::r8_opcode => reg(&mut ins, rng.pick(&regs.r8)),
                K::r16_or_mem | K::r16_reg | K::r16_reg_mem | K::r16_rm | K::r16_opcode => reg(&mut ins, rng.pick(&regs.r16)),
                K::r32_or_mem | K::r32_or_mem_mpx | K::r32_reg | K::r32_reg_mem | K::r32_rm | K::r32_opcode | K::r32_vvvv => {
                    reg(&mut ins, rng.pick(&regs.r32))
                }
                K::r64_or_mem | K::r64_or_mem_mpx | K::r64_reg | K::r64_reg_mem | K::r64_rm | K::r64_opcode | K::r64_vvvv => {
                    reg(&mut ins, rng.pick(&regs.r64))
                }
                K::al => reg(&mut ins, Register::AL),
                K::cl => reg(&mut ins, Register::CL),
                K::ax => reg(&mut ins, Register::AX),
                K::dx => reg(&mut ins, Register::DX),
                K::eax => reg(&mut ins, Register::EAX),
                K::rax => reg(&mut ins, Register::RAX),
                // Non-GPR operands: one register of the class, only to ask the model (which
                // must refuse them; a form it accepted would then fail to run here).
                K::seg_reg | K::es => reg(&mut ins, Register::ES),
                K::cs => reg(&mut ins, Register::CS),
                K::ss => reg(&mut ins, Register::SS),
                K::ds => reg(&mut ins, Register::DS),
                K::fs => reg(&mut ins, Register::FS),
                K::gs => reg(&mut ins, Register::GS),
                K::cr_reg => reg(&mut ins, Register::CR0),
                K::dr_reg => reg(&mut ins, Register::DR0),
                K::tr_reg => reg(&mut ins, Register::TR3),
                K::bnd_reg | K::bnd_or_mem_mpx => reg(&mut ins, Register::BND1),
                K::k_reg | K::kp1_reg | K::k_rm | K::k_vvvv | K::k_or_mem => reg(&mut ins, Register::K2),
                K::mm_reg | K::mm_rm | K::mm_or_mem => reg(&mut ins, Register::MM1),
                K::xmm_reg | K::xmm_rm | K::xmm_vvvv | K::xmmp3_vvvv | K::xmm_is4 | K::xmm_is5 | K::xmm_or_mem => {
                    reg(&mut ins, Register::XMM4)
                }
                K::ymm_reg | K::ymm_rm | K::ymm_vvvv | K::ymm_is4 | K::ymm_is5 | K::ymm_or_mem => reg(&mut ins, Register::YMM4),
                K::zmm_reg | K::zmm_rm | K::zmm_vvvv | K::zmmp3_vvvv | K::zmm_or_mem => reg(&mut ins, Register::ZMM4),
                K::tmm_reg | K::tmm_rm | K::tmm_vvvv => reg(&mut ins, Register::TMM1),
                K::st0 => reg(&mut ins, Register::ST0),
                K::sti_opcode => reg(&mut ins, Register::ST1),
                K::imm8 | K::imm8_const_1 => {
                    // Counts at the masking boundaries (0, 32, 64 mask to 0) are where shift
                    // and rotate models go wrong.
                    let v = if k == K::imm8_const_1 {
                        1
                    } else {
                        match rng.below(4) {
                            0 => rng.pick(&[0u8, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 96, 127, 128, 255]),
                            1 => rng.below(72) as u8,
                            _ => rng.next() as u8,
                        }
                    };
                    if imm8_done {
                        ins.set_op_kind(i, OpKind::Immediate8_2nd);
                        ins.set_immediate8_2nd(v);
                    } else {
                        ins.set_op_kind(i, OpKind::Immediate8);
                        ins.set_immediate8(v);
                    }
                    imm8_done = true;
                }
                K::imm8sex16 => {
                    ins.set_op_kind(i, OpKind::Immediate8to16);
                    ins.set_immediate8to16(rng.value() as i8 as i16);
                }
                K::imm8sex32 => {
                    ins.set_op_kind(i, OpKind::Immediate8to32);
                    ins.set_immediate8to32(rng.value() as i8 as i32);
                }
                K::imm8sex64 => {
                    ins.set_op_kind(i, OpKind::Immediate8to64);
                    ins.set_immediate8to64(rng.value() as i8 as i64);
                }
                K::imm16 => {
                    ins.set_op_kind(i, OpKind::Immediate16);
                    ins.set_immediate16(rng.value() as u16);
                }
                K::imm32 => {
                    ins.set_op_kind(i, OpKind::Immediate32);
                    ins.set_immediate32(rng.value() as u32);
                }
                K::imm32sex64 => {
                    ins.set_op_kind(i, OpKind::Immediate32to64);
                    ins.set_immediate32to64(rng.value() as i32 as i64);
                }
                K::imm64 => {
                    ins.set_op_kind(i, OpKind::Immediate64);
                    ins.set_immediate64(rng.value());
                }
                _ => return None,
            }
        }
        encode(&ins)?
    };
    Some(bytes)
}

/// `jcc/jmp` to the next instruction, over one filler or over both: the fillers are
/// modelled instructions that change registers, so the path taken shows in the result.
fn branch(code: Code, rng: &mut Rng, regs: &Regs) -> Option<Vec<u8>> {
    let mut f1 = Instruction::with2(Code::Xor_rm64_imm32, rng.pick(&regs.r64), rng.next() as i32).ok()?;
    f1.set_op_kind(1, OpKind::Immediate32to64);
    let f2 = Instruction::with1(Code::Not_rm64, rng.pick(&regs.r64)).ok()?;
    let (b1, b2) = (encode(&f1)?, encode(&f2)?);
    let len = encode(&Instruction::with_branch(code, 100).ok()?)?.len() as u64;
    let skip = [0, b1.len() as u64, (b1.len() + b2.len()) as u64][rng.below(3) as usize];
    let mut out = encode(&Instruction::with_branch(code, len + skip).ok()?)?;
    out.extend(b1);
    out.extend(b2);
    Some(out)
}

pub fn form_key(ins: &Instruction) -> FormKey {
    let mem = (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory);
    let rep = is_string(ins.code()) && ins.has_rep_prefix();
    FormKey { code: ins.code(), mem, rep }
}

/// e.g. `rol r64, imm8 (o64 C1 /0 ib)`: iced's instruction string with the r/m operand
/// resolved to the register or memory variant.
pub fn form_name(key: FormKey) -> String {
    let oc = key.code.op_code();
    let mut s = oc.instruction_string().to_lowercase();
    for w in ["8", "16", "32", "64"] {
        let rm = format!("r/m{w}");
        s = s.replace(&rm, &format!("{}{w}", if key.mem { "m" } else { "r" }));
    }
    format!("{}{s} ({})", if key.rep { "rep " } else { "" }, oc.op_code_string())
}

// ---------------------------------------------------------------------------------------
// The model on one instance.

/// The model of an instance, for one DF value and (rep forms) one rcx value, compiled
/// for concrete evaluation.
struct Model {
    smt: Smt,
    prog: Program,
    /// What each program input is.
    inputs: Vec<Input>,
    /// Output terms as text, in the order of [`OUT_NAMES`] (16 registers, 4 flags, mem,
    /// stack).
    outputs: Vec<String>,
    df_end: bool,
}

#[derive(Clone, Copy, Debug)]
enum Input {
    Gpr(usize),
    Flag(u32),
    Mem,
    Stack,
    Havoc,
}

/// Flag inputs/outputs of the model with their RFLAGS bit.
const FLAGS: [(&str, u32); 4] = [("zf", 6), ("sf", 7), ("cf", 0), ("of", 11)];

fn symbolic_state(s: &mut Smt, df: bool, rcx: Option<u64>) -> X86State {
    let gpr: [Bv; 16] = std::array::from_fn(|i| match (i, rcx) {
        // rep counts are constants in the model (the emit loads rcx with one).
        (1, Some(c)) => s.lit(64, c),
        _ => s.input(X86_NAMES[i], 64),
    });
    let mut flag = |n: &str| {
        let b = s.input(n, 1);
        let one = s.lit(1, 1);
        s.eq(&b, &one)
    };
    let (zf, sf, cf, of) = (flag("zf"), flag("sf"), flag("cf"), flag("of"));
    let mem = s.input_mem("mem");
    let stack = s.input_mem("stack");
    X86State { gpr, zf, sf, cf, of, df, mem, stack }
}

/// Does the model accept `code` (bytes)? The error says why not. A panic of the model
/// counts as accepting (the form is the model's, and every state of it will report).
pub fn model_accepts(code: &[u8]) -> Result<(), String> {
    let rep = x86::decode(code).map_err(|e| e.to_string())?.iter().any(|i| form_key(i).rep);
    let run = || {
        let mut s = Smt::new();
        let init = symbolic_state(&mut s, false, rep.then_some(1));
        x86::run_to_end(&mut s, code, init).map(|_| ()).map_err(|e| e.to_string())
    };
    match quiet_catch(run) {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

/// Run `f`, turning a panic into its message (without the default hook's printout).
fn quiet_catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_MODEL.with(|c| c.get()) {
                prev(info)
            }
        }));
    });
    IN_MODEL.with(|c| c.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_MODEL.with(|c| c.set(false));
    r.map_err(|p| {
        p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
    })
}

thread_local! {
    static IN_MODEL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Model {
    fn new(code: &[u8], df: bool, rcx: Option<u64>) -> Result<Model, String> {
        let mut s = Smt::new();
        let init = symbolic_state(&mut s, df, rcx);
        let end = quiet_catch(|| x86::run_to_end(&mut s, code, init))
            .map_err(|p| format!("the model panics: {p}"))?
            .map_err(|e| e.to_string())?;
        let mut outputs: Vec<String> = end.gpr.iter().map(|g| g.s.to_string()).collect();
        outputs.extend([&end.zf, &end.sf, &end.cf, &end.of].iter().map(|b| b.0.to_string()));
        outputs.push(end.mem.0.to_string());
        outputs.push(end.stack.0.to_string());
        let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        let prog = Program::new(&s, &refs).map_err(|e| e.to_string())?;
        let inputs = prog
            .input_names()
            .iter()
            .map(|n| match *n {
                "mem" => Input::Mem,
                "stack" => Input::Stack,
                n => {
                    if let Some(i) = X86_NAMES.iter().position(|x| *x == n) {
                        Input::Gpr(i)
                    } else if let Some(&(_, bit)) = FLAGS.iter().find(|f| f.0 == n) {
                        Input::Flag(bit)
                    } else {
                        Input::Havoc
                    }
                }
            })
            .collect();
        Ok(Model { smt: s, prog, inputs, outputs, df_end: end.df })
    }
}

// ---------------------------------------------------------------------------------------
// States.

#[derive(Clone, Debug)]
struct State {
    cpu: CpuState,
    mem_seed: u64,
    stack_seed: u64,
}

struct Regions {
    data: u64,
    stack: u64,
}

fn in_region(a: u64, base: u64, n: u64) -> bool {
    a.wrapping_sub(base) <= REGION as u64 - n
}

/// Multiplicative inverse of an odd number modulo 2^64 (Newton's iteration).
fn inverse(k: u64) -> u64 {
    let mut x = k;
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(k.wrapping_mul(x)));
    }
    x
}

/// A random state under which every access of `insns` is valid. Constrained components:
/// - rsp points into the middle of the scratch stack region (pushes, pops and rsp-based
///   operands stay inside it; a signal frame would land below it in mapped memory);
/// - the base register of an accessing memory operand (the index, when there is no base)
///   is solved so the address lands in the data region (the stack region for rsp);
///   lea, nop and prefetch do not access memory, so theirs stay random;
/// - for rep movs/stos: rcx in 0..=8, rsi/rdi inside the data region (both directions fit);
/// - locked accesses (xchg with memory) are aligned: a split lock may be trapped or
///   throttled by the kernel.
/// Everything else (other registers, CF PF AF ZF SF OF DF, memory bytes) is random.
fn gen_state(insns: &[Instruction], rng: &mut Rng, r: &Regions) -> Option<State> {
    let mut gpr: [u64; 16] = std::array::from_fn(|_| rng.value());
    // Equal operands make ZF, equal compares and zero results common.
    for i in 0..16 {
        if rng.below(6) == 0 {
            gpr[i] = gpr[rng.below(16) as usize];
        }
    }
    let mut rsp = r.stack + 96 + rng.below(65);
    if rng.below(8) != 0 {
        rsp &= !7;
    }
    gpr[4] = rsp;
    for ins in insns {
        let m = ins.mnemonic();
        if form_key(ins).rep {
            gpr[1] = rng.below(9);
            gpr[6] = r.data + 64 + rng.below(128);
            gpr[7] = r.data + 64 + rng.below(128);
            continue;
        }
        let Some(i) = (0..ins.op_count()).find(|&i| ins.op_kind(i) == OpKind::Memory) else { continue };
        let _ = i;
        if matches!(m, Mnemonic::Lea | Mnemonic::Nop)
            || format!("{m:?}").starts_with("Prefetch")
            || ins.memory_base() == Register::None && ins.memory_index() == Register::None
        {
            continue;
        }
        let size = ins.memory_size().size().max(1) as u64;
        let (base, index) = (ins.memory_base(), ins.memory_index());
        let bi = base.full_register() as usize - Register::RAX as usize;
        let ii = (index != Register::None).then(|| index.full_register() as usize - Register::RAX as usize);
        let scale = ins.memory_index_scale() as u64;
        let disp = ins.memory_displacement64();
        let region = if base == Register::RSP { r.stack } else { r.data };
        let mut t = region + 64 + rng.below(128 - size);
        if m == Mnemonic::Xchg {
            t &= !(size - 1);
        }
        if base == Register::None {
            let ii = ii?;
            t -= t.wrapping_sub(disp) % scale;
            gpr[ii] = t.wrapping_sub(disp) / scale;
        } else if Some(bi) == ii {
            let k = scale + 1;
            if k % 2 == 0 {
                t -= t.wrapping_sub(disp) & 1;
                gpr[bi] = t.wrapping_sub(disp) >> 1;
            } else {
                gpr[bi] = t.wrapping_sub(disp).wrapping_mul(inverse(k));
            }
        } else if base == Register::RSP {
            match ii {
                Some(ii) => {
                    t -= t.wrapping_sub(disp).wrapping_sub(gpr[4]) % scale;
                    gpr[ii] = t.wrapping_sub(disp).wrapping_sub(gpr[4]) / scale;
                }
                // rsp + small displacement: already inside the stack region.
                None => {
                    if !in_region(gpr[4].wrapping_add(disp), r.stack, 16) {
                        return None;
                    }
                }
            }
        } else {
            let off = ii.map_or(0, |ii| gpr[ii].wrapping_mul(scale));
            gpr[bi] = t.wrapping_sub(disp).wrapping_sub(off);
        }
        if gpr[4] != rsp && base != Register::RSP && ii != Some(4) {
            return None; // the operand needed rsp elsewhere
        }
    }
    let rflags = rng.next() & SETTABLE_FLAGS;
    Some(State { cpu: CpuState { gpr, rflags }, mem_seed: rng.next(), stack_seed: rng.next() })
}

fn show_regs(g: &[u64; 16]) -> String {
    g.iter().enumerate().map(|(i, v)| format!("{}={v:#x}", X86_NAMES[i])).collect::<Vec<_>>().join(" ")
}

fn show_flags(f: u64) -> String {
    let mut s = String::new();
    for (n, b) in [("CF", 0), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("DF", 10), ("OF", 11)] {
        write!(s, "{n}={} ", (f >> b) & 1).unwrap();
    }
    s.trim_end().to_string()
}

/// What the model computes on one state.
struct Outcome {
    vals: Vec<Val>,
}

fn eval_model(m: &Model, st: &State, r: &Regions) -> Result<Outcome, String> {
    let inputs: Vec<Val> = m
        .inputs
        .iter()
        .map(|i| match *i {
            Input::Gpr(g) => Val::Bv(64, st.cpu.gpr[g]),
            Input::Flag(bit) => Val::Bv(1, (st.cpu.rflags >> bit) & 1),
            Input::Mem | Input::Stack | Input::Havoc => Val::Undef,
        })
        .collect();
    let (data, stack, ms, ss) = (r.data, r.stack, st.mem_seed, st.stack_seed);
    let memory = move |root: &str, a: u64| match root {
        "mem" if in_region(a, data, 1) => Some(mem_byte(a, ms)),
        "stack" if in_region(a, stack, 1) => Some(mem_byte(a, ss)),
        _ => None,
    };
    let vals = m.prog.eval(&inputs, &memory).map_err(|e| e.to_string())?;
    Ok(Outcome { vals })
}

/// The model's bytes of a region after the code (initial bytes where it stored nothing),
/// or the stores it made outside the region.
fn region_after(v: &Val, base: u64, seed: u64) -> Result<Option<Vec<u8>>, Vec<u64>> {
    let Val::Mem(m) = v else { return Ok(None) };
    let outside: Vec<u64> = m.writes.iter().map(|w| w.0).filter(|&a| !in_region(a, base, 1)).collect();
    if !outside.is_empty() {
        return Err(outside);
    }
    Ok(Some((0..REGION as u64).map(|i| m.written(base + i).unwrap_or(mem_byte(base + i, seed))).collect()))
}

/// Differences between the CPU and the model on one state.
fn compare(m: &Model, o: &Outcome, cpu: &CpuState, data: &[u8], stack: &[u8], st: &State, r: &Regions) -> Vec<String> {
    let mut d = Vec::new();
    for (i, v) in o.vals[..16].iter().enumerate() {
        match v {
            Val::Bv(64, x) if *x == cpu.gpr[i] => {}
            Val::Undef => {}
            v => d.push(format!("{}: cpu {:#x}, model {v:?}", X86_NAMES[i], cpu.gpr[i])),
        }
    }
    for (k, (n, bit)) in FLAGS.iter().enumerate() {
        let c = (cpu.rflags >> bit) & 1 == 1;
        match &o.vals[16 + k] {
            Val::Bool(b) if *b == c => {}
            Val::Undef => {}
            v => d.push(format!("{}: cpu {}, model {v:?}", n.to_uppercase(), c as u8)),
        }
    }
    let cdf = (cpu.rflags >> 10) & 1 == 1;
    if cdf != m.df_end {
        d.push(format!("DF: cpu {}, model {}", cdf as u8, m.df_end as u8));
    }
    for (what, v, base, seed, after) in
        [("data", &o.vals[20], r.data, st.mem_seed, data), ("stack", &o.vals[21], r.stack, st.stack_seed, stack)]
    {
        match region_after(v, base, seed) {
            Err(out) => d.push(format!("{what}: model stores outside the region at {out:x?}")),
            Ok(None) => {}
            Ok(Some(bytes)) => {
                let diff: Vec<String> = (0..REGION)
                    .filter(|&i| bytes[i] != after[i])
                    .map(|i| format!("{:#x}: cpu {:#04x} model {:#04x}", base + i as u64, after[i], bytes[i]))
                    .collect();
                if !diff.is_empty() {
                    d.push(format!("{what} memory: {}", diff.join(", ")));
                }
            }
        }
    }
    d
}

fn show_model(o: &Outcome) -> String {
    let mut s = String::new();
    for (i, v) in o.vals[..16].iter().enumerate() {
        match v {
            Val::Bv(_, x) => write!(s, "{}={x:#x} ", X86_NAMES[i]).unwrap(),
            v => write!(s, "{}={v:?} ", X86_NAMES[i]).unwrap(),
        }
    }
    for (k, (n, _)) in FLAGS.iter().enumerate() {
        match &o.vals[16 + k] {
            Val::Bool(b) => write!(s, "{}={} ", n.to_uppercase(), *b as u8).unwrap(),
            _ => write!(s, "{}=undefined ", n.to_uppercase()).unwrap(),
        }
    }
    for (what, v) in [("data", &o.vals[20]), ("stack", &o.vals[21])] {
        if let Val::Mem(m) = v {
            if !m.writes.is_empty() {
                write!(s, "{what} stores {:x?} ", m.writes).unwrap();
            }
        }
    }
    s.trim_end().to_string()
}

// ---------------------------------------------------------------------------------------
// z3 cross-check of the concrete evaluator.

/// z3's `simplify` of the model's outputs on `st`, compared with the concrete evaluator's
/// `o`. Returns the differences (an evaluator bug, or a term z3 reads differently).
/// A state waiting for its z3 cross-check: the script part that defines the model on it
/// and asks for each output, and what the evaluator said. The form's states go to z3 in
/// one query (a query costs milliseconds however small).
struct Pending {
    tag: usize,
    script: String,
    vals: Vec<Val>,
    probes: [Vec<u64>; 2],
    st: State,
    report: Disagreement,
}

fn z3_fragment(m: &Model, o: &Outcome, st: &State, r: &Regions, tag: usize, report: Disagreement) -> Pending {
    let refs: Vec<&str> = m.outputs.iter().map(String::as_str).collect();
    let lines = m.smt.lines_for(&refs);
    let names: HashSet<&str> = lines.iter().filter_map(|l| l.split_whitespace().nth(1)).collect();
    let p = format!("s{tag}_");
    let rename = |text: &str| -> String {
        smt::split_tokens(text).into_iter().map(|t| if names.contains(t) { format!("{p}{t}") } else { t.to_string() }).collect()
    };
    let mut script = String::new();
    let mem_def = |seed: u64| {
        format!(
            "(lambda ((kops_addr (_ BitVec 64))) ((_ extract 63 56) (bvmul (bvxor kops_addr (_ bv{seed} 64)) (_ bv{MEM_MUL} 64))))"
        )
    };
    for l in &lines {
        let name = l.split_whitespace().nth(1).unwrap_or("");
        let lit = if l.starts_with("(declare-const") {
            match name {
                "mem" => Some(format!("(Array (_ BitVec 64) (_ BitVec 8)) {}", mem_def(st.mem_seed))),
                "stack" => Some(format!("(Array (_ BitVec 64) (_ BitVec 8)) {}", mem_def(st.stack_seed))),
                n => X86_NAMES
                    .iter()
                    .position(|x| *x == n)
                    .map(|g| format!("(_ BitVec 64) (_ bv{} 64)", st.cpu.gpr[g]))
                    .or_else(|| FLAGS.iter().find(|f| f.0 == n).map(|f| format!("(_ BitVec 1) (_ bv{} 1)", (st.cpu.rflags >> f.1) & 1))),
            }
        } else {
            None
        };
        match lit {
            Some(def) => writeln!(script, "(define-fun {p}{name} () {def})").unwrap(),
            None => writeln!(script, "{}", rename(l)).unwrap(),
        }
    }
    for (k, out) in m.outputs.iter().enumerate() {
        let term = rename(out);
        writeln!(script, "(echo \"@{tag}:{k}\")").unwrap();
        if k >= 20 {
            let sel: Vec<String> = probe_addrs(k, o, st, r).iter().map(|a| format!("(select {term} (_ bv{a} 64))")).collect();
            writeln!(script, "(simplify (concat {}))", sel.join(" ")).unwrap();
        } else {
            writeln!(script, "(simplify {term})").unwrap();
        }
    }
    Pending {
        tag,
        script,
        vals: o.vals.clone(),
        probes: [probe_addrs(20, o, st, r), probe_addrs(21, o, st, r)],
        st: st.clone(),
        report,
    }
}

/// Run the pending states through z3; each state whose z3 values differ from the
/// evaluator's becomes a disagreement (an evaluator bug, or a term z3 reads differently).
fn z3_check(pending: &[Pending], r: &Regions) -> Result<Vec<Disagreement>, String> {
    if pending.is_empty() {
        return Ok(vec![]);
    }
    let script: String = pending.iter().map(|p| p.script.as_str()).collect();
    let out = smt::run_script(&script).map_err(|e| e.to_string())?;
    let mut answers: HashMap<(usize, usize), &str> = HashMap::new();
    for part in out.split('@').skip(1) {
        let (head, text) = part.split_once('\n').unwrap_or((part, ""));
        let (t, k) = head.trim().split_once(':').ok_or_else(|| format!("z3 answered {out}"))?;
        let key = (t.parse().map_err(|_| format!("z3 answered {out}"))?, k.parse().map_err(|_| format!("z3 answered {out}"))?);
        answers.insert(key, text.trim());
    }
    let mut bad = Vec::new();
    for p in pending {
        let mut diffs = Vec::new();
        for (k, mine) in p.vals.iter().enumerate() {
            let Some(text) = answers.get(&(p.tag, k)) else {
                diffs.push(format!("output {k}: no answer from z3"));
                continue;
            };
            let lit = parse_literal(text);
            let ok = match (mine, &lit) {
                (Val::Undef, _) => true,
                (Val::Bool(b), Some(Lit::Bool(z))) => b == z,
                (Val::Bv(_, v), Some(Lit::Bits(bits))) => bits.len() <= 8 && bits.iter().fold(0u64, |a, b| a << 8 | *b as u64) == *v,
                (Val::Mem(_), Some(Lit::Bits(bits))) => {
                    let (base, seed) = if k == 20 { (r.data, p.st.mem_seed) } else { (r.stack, p.st.stack_seed) };
                    let want: Option<Vec<u8>> = region_after(mine, base, seed)
                        .ok()
                        .flatten()
                        .map(|b| p.probes[k - 20].iter().map(|a| b[(a - base) as usize]).collect());
                    want.as_ref() == Some(bits)
                }
                _ => false,
            };
            if !ok {
                let short: String = text.chars().take(200).collect();
                diffs.push(format!("z3 and the evaluator differ on output {k}: evaluator {mine:?}, z3 {short}"));
            }
        }
        if !diffs.is_empty() {
            let mut d = p.report.clone();
            d.differs = diffs;
            bad.push(d);
        }
    }
    Ok(bad)
}

/// Region addresses whose final byte z3 is asked for: every one the model stored to, and
/// a few others (the whole region made z3 the bottleneck).
fn probe_addrs(k: usize, o: &Outcome, st: &State, r: &Regions) -> Vec<u64> {
    let base = if k == 20 { r.data } else { r.stack };
    let mut v: Vec<u64> = match &o.vals[k] {
        Val::Mem(m) => m.writes.iter().map(|w| w.0).filter(|&a| in_region(a, base, 1)).collect(),
        _ => vec![],
    };
    let mut rng = Rng::new(st.mem_seed ^ k as u64);
    v.extend((0..8).map(|_| base + rng.below(REGION as u64)));
    v.sort();
    v.dedup();
    v
}

enum Lit {
    Bool(bool),
    /// Big-endian bytes (a width that is not a multiple of 8 is padded at the top).
    Bits(Vec<u8>),
}

fn parse_literal(t: &str) -> Option<Lit> {
    match t {
        "true" => return Some(Lit::Bool(true)),
        "false" => return Some(Lit::Bool(false)),
        _ => {}
    }
    let bits: Vec<u8> = if let Some(h) = t.strip_prefix("#x") {
        h.chars().map(|c| c.to_digit(16).map(|d| d as u8)).collect::<Option<Vec<u8>>>()?.iter().flat_map(|d| (0..4).rev().map(move |i| (d >> i) & 1)).collect()
    } else if let Some(b) = t.strip_prefix("#b") {
        b.chars().map(|c| c.to_digit(2).map(|d| d as u8)).collect::<Option<Vec<u8>>>()?
    } else {
        return None;
    };
    let pad = (8 - bits.len() % 8) % 8;
    let all: Vec<u8> = std::iter::repeat(0).take(pad).chain(bits).collect();
    Some(Lit::Bits(all.chunks(8).map(|c| c.iter().fold(0u8, |a, b| a << 1 | b)).collect()))
}

// ---------------------------------------------------------------------------------------
// Running a form.

struct Checker {
    cpu: Cpu,
    regions: Regions,
}

impl Checker {
    fn new() -> Result<Checker, String> {
        let cpu = Cpu::new().map_err(|e| format!("scratch memory: {e}"))?;
        let regions = Regions { data: cpu.data_base(), stack: cpu.stack_base() };
        Ok(Checker { cpu, regions })
    }

    fn finish_z3(&self, pending: &[Pending], rep: &mut FormReport) {
        let found = z3_check(pending, &self.regions).unwrap_or_else(|e| {
            vec![Disagreement {
                form: rep.name.clone(),
                code: String::new(),
                state: String::new(),
                cpu: String::new(),
                model: String::new(),
                differs: vec![format!("z3: {e}")],
            }]
        });
        for d in found {
            rep.disagreements += 1;
            if rep.examples.len() < KEEP_EXAMPLES {
                rep.examples.push(d);
            }
        }
    }

    /// Run `states` states of the CPU on `cpu_code` and of the model on `model_code`
    /// (the same bytes, except in the checker's own self-test).
    fn run_instance(
        &mut self,
        form: &str,
        cpu_code: &[u8],
        model_code: &[u8],
        states: usize,
        z3_states: usize,
        rng: &mut Rng,
        opts: &Options,
        rep: &mut FormReport,
        pending: &mut Vec<Pending>,
    ) {
        let insns = match x86::decode(cpu_code) {
            Ok(i) => i,
            Err(e) => {
                rep.disagreements += 1;
                rep.examples.push(Disagreement {
                    form: form.into(),
                    code: hex(cpu_code),
                    state: String::new(),
                    cpu: String::new(),
                    model: String::new(),
                    differs: vec![e.to_string()],
                });
                return;
            }
        };
        let text = format!(
            "{} [{}]",
            insns.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("; "),
            hex(cpu_code)
        );
        if let Some(f) = insns.iter().flat_map(|i| i.cpuid_features().iter().copied()).find(|f| !cpu_has(*f)) {
            rep.disagreements += 1;
            rep.examples.push(Disagreement {
                form: form.into(),
                code: text,
                state: String::new(),
                cpu: String::new(),
                model: String::new(),
                differs: vec![format!("this CPU lacks {f:?}: the model accepts a form that cannot be checked here")],
            });
            return;
        }
        let is_rep = insns.iter().any(|i| form_key(i).rep);
        let mut models: HashMap<(bool, Option<u64>), Result<Model, String>> = HashMap::new();
        self.cpu.install(cpu_code);
        rep.instances += 1;
        let mut done = 0;
        let mut tries = 0;
        while done < states && tries < states * 4 {
            tries += 1;
            let Some(st) = gen_state(&insns, rng, &self.regions) else { continue };
            let df = (st.cpu.rflags >> 10) & 1 == 1;
            let key = (df, is_rep.then_some(st.cpu.gpr[1]));
            let model = models.entry(key).or_insert_with(|| Model::new(model_code, key.0, key.1));
            let (data, stack) = (self.regions.data, self.regions.stack);
            for (i, b) in self.cpu.data_region().iter_mut().enumerate() {
                *b = mem_byte(data + i as u64, st.mem_seed);
            }
            for (i, b) in self.cpu.stack_region().iter_mut().enumerate() {
                *b = mem_byte(stack + i as u64, st.stack_seed);
            }
            // SAFETY: gen_state keeps every access of the instance inside the regions and
            // rsp inside the stack region; the code ends by falling through.
            let mut out = unsafe { self.cpu.run(&st.cpu) };
            if let Some(p) = opts.perturb {
                p(&mut out);
            }
            let data_after = self.cpu.data_region().to_vec();
            let stack_after = self.cpu.stack_region().to_vec();
            done += 1;
            rep.states += 1;
            let state_text = || {
                format!(
                    "{} {}, data/stack bytes: mem_byte(addr, {:#x}) / mem_byte(addr, {:#x}) at {:#x}/{:#x}+0..{REGION}",
                    show_regs(&st.cpu.gpr),
                    show_flags(st.cpu.rflags),
                    st.mem_seed,
                    st.stack_seed,
                    data,
                    stack
                )
            };
            let cpu_text = || format!("{} {}", show_regs(&out.gpr), show_flags(out.rflags));
            let report = |differs: Vec<String>, model: String, rep: &mut FormReport| {
                rep.disagreements += 1;
                if rep.examples.len() < KEEP_EXAMPLES {
                    rep.examples.push(Disagreement {
                        form: form.into(),
                        code: text.clone(),
                        state: state_text(),
                        cpu: cpu_text(),
                        model,
                        differs,
                    });
                }
            };
            let model = match model {
                Ok(m) => m,
                Err(e) => {
                    report(vec![format!("the model refuses this instance: {e}")], String::new(), rep);
                    continue;
                }
            };
            let o = match eval_model(model, &st, &self.regions) {
                Ok(o) => o,
                Err(e) => {
                    report(vec![format!("model: {e}")], String::new(), rep);
                    continue;
                }
            };
            let d = compare(model, &o, &out, &data_after, &stack_after, &st, &self.regions);
            if rep.z3_states < z3_states {
                rep.z3_states += 1;
                let ctx = Disagreement {
                    form: form.into(),
                    code: text.clone(),
                    state: state_text(),
                    cpu: cpu_text(),
                    model: show_model(&o),
                    differs: vec![],
                };
                pending.push(z3_fragment(model, &o, &st, &self.regions, pending.len(), ctx));
            }
            if !d.is_empty() {
                report(d, show_model(&o), rep);
            }
        }
    }
}

/// Can this CPU run instructions needing `f`? Unknown features count as absent.
fn cpu_has(f: iced_x86::CpuidFeature) -> bool {
    use iced_x86::CpuidFeature as F;
    match f {
        F::INTEL8086 | F::INTEL186 | F::INTEL286 | F::INTEL386 | F::INTEL486 | F::X64 | F::CMOV | F::MULTIBYTENOP
        | F::SSE | F::SSE2 => true,
        F::BMI1 => std::arch::is_x86_feature_detected!("bmi1"),
        F::BMI2 => std::arch::is_x86_feature_detected!("bmi2"),
        F::MOVBE => std::arch::is_x86_feature_detected!("movbe"),
        F::POPCNT => std::arch::is_x86_feature_detected!("popcnt"),
        F::TBM => std::arch::is_x86_feature_detected!("tbm"),
        F::LZCNT => std::arch::is_x86_feature_detected!("lzcnt"),
        _ => false,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

const GENERATED_INSTANCES: usize = 10;
const EMITTED_INSTANCES: usize = 6;

fn check_form(ck: &mut Checker, form: &Form, opts: &Options, regs: &Regs) -> FormReport {
    let mut rep = FormReport {
        name: form.name.clone(),
        in_emits: form.in_emits,
        instances: 0,
        states: 0,
        z3_states: 0,
        disagreements: 0,
        examples: vec![],
    };
    let mut rng = Rng::new(opts.seed ^ hash_str(&form.name));
    let ctx = Ctx { data: ck.regions.data };
    let mut instances: Vec<Vec<u8>> = form.emitted.iter().take(EMITTED_INSTANCES).cloned().collect();
    let mut tries = 0;
    let mut seen: HashSet<Vec<u8>> = instances.iter().cloned().collect();
    while instances.len() < GENERATED_INSTANCES + form.emitted.len().min(EMITTED_INSTANCES) && tries < 400 {
        tries += 1;
        if let Some(b) = build(form.key, &mut rng, regs, ctx) {
            if model_accepts(&b).is_ok() && seen.insert(b.clone()) {
                instances.push(b);
            }
        }
    }
    if instances.is_empty() {
        rep.disagreements += 1;
        rep.examples.push(Disagreement {
            form: form.name.clone(),
            code: String::new(),
            state: String::new(),
            cpu: String::new(),
            model: String::new(),
            differs: vec!["no instance of this form could be built".into()],
        });
        return rep;
    }
    let n = instances.len();
    let mut pending = Vec::new();
    for (k, b) in instances.iter().enumerate() {
        let states = opts.states / n + usize::from(k < opts.states % n);
        let z3 = opts.z3_sample / n + usize::from(k < opts.z3_sample % n);
        ck.run_instance(&form.name, b, b, states, rep.z3_states + z3, &mut rng, opts, &mut rep, &mut pending);
    }
    ck.finish_z3(&pending, &mut rep);
    rep
}

/// Check the model of `model_code` against the CPU running `cpu_code` (the checker's own
/// test: with different code it must report disagreements).
pub fn check_pair(cpu_code: &[u8], model_code: &[u8], opts: &Options) -> Result<FormReport, String> {
    let mut ck = Checker::new()?;
    let mut rep = FormReport {
        name: "pair".into(),
        in_emits: false,
        instances: 0,
        states: 0,
        z3_states: 0,
        disagreements: 0,
        examples: vec![],
    };
    let mut rng = Rng::new(opts.seed);
    let mut pending = Vec::new();
    ck.run_instance("pair", cpu_code, model_code, opts.states, opts.z3_sample, &mut rng, opts, &mut rep, &mut pending);
    ck.finish_z3(&pending, &mut rep);
    Ok(rep)
}

// ---------------------------------------------------------------------------------------
// Enumeration.

/// Every form of the model, marked with the ones the native emits produce.
pub fn forms() -> FormSet {
    let regs = Regs::new();
    let mut rng = Rng::new(1);
    let ctx = Ctx { data: 0x1000_0000 };
    let mut accepted: BTreeMap<FormKey, Form> = BTreeMap::new();
    let mut unbuilt: Vec<(FormKey, Mnemonic)> = Vec::new();
    for code in Code::values() {
        let oc = code.op_code();
        if !oc.is_instruction() || !oc.mode64() {
            continue;
        }
        let has_rm = oc.op_kinds().iter().any(|k| {
            matches!(
                k,
                K::r8_or_mem
                    | K::r16_or_mem
                    | K::r32_or_mem
                    | K::r64_or_mem
                    | K::r32_or_mem_mpx
                    | K::r64_or_mem_mpx
                    | K::r16_reg_mem
                    | K::r32_reg_mem
                    | K::r64_reg_mem
                    | K::mm_or_mem
                    | K::xmm_or_mem
                    | K::ymm_or_mem
                    | K::zmm_or_mem
                    | K::k_or_mem
                    | K::bnd_or_mem_mpx
            )
        });
        let pure_mem = oc.op_kinds().iter().any(|k| matches!(k, K::mem | K::mem_mpx | K::mem_mib | K::sibmem | K::mem_offs));
        let mems: &[bool] = if has_rm { &[false, true] } else { &[pure_mem] };
        let reps: &[bool] = if is_string(code) { &[false, true] } else { &[false] };
        for &mem in mems {
            for &rep in reps {
                let key = FormKey { code, mem, rep };
                let mut inst = Err(NotBuilt::Cannot);
                for _ in 0..40 {
                    inst = build_why(key, &mut rng, &regs, ctx);
                    if inst.is_ok() {
                        break;
                    }
                }
                match inst {
                    Err(NotBuilt::Cannot) => unbuilt.push((key, code.mnemonic())),
                    Err(NotBuilt::DecodesAs) => {}
                    Ok(b) => {
                        if model_accepts(&b).is_ok() {
                            accepted.insert(key, Form { key, name: form_name(key), in_emits: false, emitted: vec![] });
                        }
                    }
                }
            }
        }
    }
    let modelled: HashSet<Mnemonic> = accepted.keys().map(|k| k.code.mnemonic()).collect();
    let unbuilt = unbuilt.into_iter().filter(|(_, m)| modelled.contains(m)).map(|(k, _)| form_name(k)).collect();
    let mut outside = BTreeMap::new();
    for (key, bytes) in emitted_instructions() {
        match accepted.get_mut(&key) {
            Some(f) => {
                f.in_emits = true;
                let branch = key.code.op_code().op_kinds().iter().any(|k| matches!(k, K::br64_1 | K::br64_4));
                if !branch && f.emitted.len() < 64 && !f.emitted.contains(&bytes) {
                    f.emitted.push(bytes);
                }
            }
            None => {
                outside.insert(key, form_name(key));
            }
        }
    }
    // A spread of the emitted instructions, not the first few classes' registers only.
    for f in accepted.values_mut() {
        let n = f.emitted.len();
        if n > EMITTED_INSTANCES {
            let step = n / EMITTED_INSTANCES;
            f.emitted = (0..EMITTED_INSTANCES).map(|i| f.emitted[i * step].clone()).collect();
        }
    }
    FormSet { forms: accepted.into_values().collect(), unbuilt, emitted_outside_model: outside.into_values().collect() }
}

/// Every instruction (form, bytes) of every op's emits over its payload classes, feature
/// sets and temporaries live/dead.
fn emitted_instructions() -> Vec<(FormKey, Vec<u8>)> {
    use kops_analysis::RegSet;
    let mut out = Vec::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    for op in kops_einsn::registry().iter() {
        for c in op.classes() {
            for (_, feats) in crate::einsn::feature_sets() {
                for dead in [RegSet(0), RegSet::from_regs(&c.temps)] {
                    let Ok(Some(code)) =
                        kops_kinsn::emit_x86_checked(op.as_ref(), c.payload, feats, dead, &kops_jit::REGMAP, kops_jit::AUX_REG)
                    else {
                        continue;
                    };
                    if !seen.insert(code.clone()) {
                        continue;
                    }
                    let mut d = Decoder::with_ip(64, &code, 0, DecoderOptions::NONE);
                    while d.can_decode() {
                        let i = d.decode();
                        let at = i.ip() as usize;
                        out.push((form_key(&i), code[at..at + i.len()].to_vec()));
                    }
                }
            }
        }
    }
    out
}

/// The whole check: every form of the model, `opts.states` states each.
pub fn check_all(set: &FormSet, opts: &Options, mut progress: impl FnMut(&FormReport) + Send) -> Result<Vec<FormReport>, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<(usize, FormReport)>> = Mutex::new(Vec::new());
    let progress = Mutex::new(&mut progress);
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|| {
                let regs = Regs::new();
                let mut ck = match Checker::new() {
                    Ok(c) => c,
                    Err(e) => {
                        errors.lock().unwrap().push(e);
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = set.forms.get(i) else { break };
                    let r = check_form(&mut ck, f, opts, &regs);
                    (progress.lock().unwrap())(&r);
                    reports.lock().unwrap().push((i, r));
                }
            });
        }
    });
    if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
        return Err(e);
    }
    let mut r = reports.into_inner().unwrap();
    r.sort_by_key(|x| x.0);
    Ok(r.into_iter().map(|x| x.1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_is_an_inverse() {
        for k in [3u64, 5, 9, 0xffff_fffb] {
            assert_eq!(k.wrapping_mul(inverse(k)), 1);
        }
    }

    #[test]
    fn literals_parse() {
        assert!(matches!(parse_literal("#x01ff"), Some(Lit::Bits(b)) if b == vec![1, 0xff]));
        assert!(matches!(parse_literal("#b1"), Some(Lit::Bits(b)) if b == vec![1]));
        assert!(parse_literal("(= h1 #b1)").is_none());
    }
}
