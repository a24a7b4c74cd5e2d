//! Test harness: a minimal eBPF evaluator for proof sequences and an executor for native
//! x86-64 code on a given register/memory state.

#![allow(dead_code)]

use kops_isa::{op, sem, Insn};
use kops_x86::{Asm, Mem, Reg, Size, Width};

// ---------------------------------------------------------------------------------------
// Evaluator: just the instructions proof sequences use, written from the eBPF ISA spec.

pub struct Memory {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl Memory {
    fn at(&self, addr: u64, n: usize) -> Result<usize, String> {
        let off = addr.wrapping_sub(self.base);
        if off > self.bytes.len() as u64 || off as usize + n > self.bytes.len() {
            return Err(format!("access of {n} bytes at {addr:#x} outside the test buffer"));
        }
        Ok(off as usize)
    }
    fn load(&self, addr: u64, n: usize) -> Result<u64, String> {
        let o = self.at(addr, n)?;
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.bytes[o..o + n]);
        Ok(u64::from_le_bytes(b))
    }
    fn store(&mut self, addr: u64, n: usize, v: u64) -> Result<(), String> {
        let o = self.at(addr, n)?;
        self.bytes[o..o + n].copy_from_slice(&v.to_le_bytes()[..n]);
        Ok(())
    }
}

fn alu(opc: u8, off: i16, a: u64, b: u64, is64: bool) -> Result<u64, String> {
    let r = if is64 { sem::alu64(opc, off, a, b) } else { sem::alu32(opc, off, a as u32, b as u32).map(u64::from) };
    r.ok_or_else(|| format!("ALU op {opc:#x} not supported by the test evaluator"))
}

/// Run a straight-line-with-forward-jumps sequence to its end.
pub fn eval(prog: &[Insn], r: &mut [u64; 11], m: &mut Memory) -> Result<(), String> {
    let mut pc = 0usize;
    let mut steps = 0;
    while pc < prog.len() {
        steps += 1;
        if steps > 10_000 {
            return Err("too many steps".into());
        }
        let i = prog[pc];
        let (d, s) = (i.dst as usize, i.src as usize);
        match i.class() {
            op::ALU64 | op::ALU => {
                let is64 = i.class() == op::ALU64;
                if i.op() == op::END {
                    let v = r[d];
                    r[d] = match (is64, i.source() == op::TO_BE, i.imm) {
                        (false, false, 16) => v as u16 as u64,
                        (false, false, 32) => v as u32 as u64,
                        (false, false, 64) => v,
                        (_, _, 16) => (v as u16).swap_bytes() as u64,
                        (_, _, 32) => (v as u32).swap_bytes() as u64,
                        (_, _, 64) => v.swap_bytes(),
                        _ => return Err(format!("bad END at {pc}")),
                    };
                } else {
                    if i.op() == op::MOV && i.off != 0 {
                        return Err("movsx not supported by the test evaluator".into());
                    }
                    let b = if i.source() == op::X {
                        r[s]
                    } else if is64 {
                        i.imm as i64 as u64
                    } else {
                        i.imm as u32 as u64
                    };
                    r[d] = alu(i.op(), i.off, r[d], b, is64)?;
                }
            }
            op::LDX if i.mode() == op::MEM => {
                r[d] = m.load(r[s].wrapping_add(i.off as i64 as u64), i.size_bytes())?;
            }
            op::STX if i.mode() == op::MEM => {
                m.store(r[d].wrapping_add(i.off as i64 as u64), i.size_bytes(), r[s])?;
            }
            op::ST if i.mode() == op::MEM => {
                m.store(r[d].wrapping_add(i.off as i64 as u64), i.size_bytes(), i.imm as i64 as u64)?;
            }
            op::LD if i.is_ld_imm64() && i.src == 0 => {
                let hi = prog.get(pc + 1).ok_or("truncated ld_imm64")?.imm as u32 as u64;
                r[d] = (i.imm as u32 as u64) | hi << 32;
                pc += 2;
                continue;
            }
            op::JMP | op::JMP32 => {
                let is64 = i.class() == op::JMP;
                let taken = if i.op() == op::JA {
                    true
                } else {
                    let a = r[d];
                    let b = if i.source() == op::X { r[s] } else { i.imm as i64 as u64 };
                    let t = if is64 { sem::cond64(i.op(), a, b) } else { sem::cond32(i.op(), a as u32, b as u32) };
                    t.ok_or_else(|| format!("jump op {:#x} not supported by the test evaluator", i.op()))?
                };
                if taken {
                    let t = pc as i64 + 1 + i.jump_offset() as i64;
                    if t <= pc as i64 || t > prog.len() as i64 {
                        return Err(format!("jump from {pc} to {t}"));
                    }
                    pc = t as usize;
                    continue;
                }
            }
            _ => return Err(format!("instruction {pc} ({:#04x}) not supported by the test evaluator", i.code)),
        }
        pc += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Native execution: the code runs between a prologue that loads all 16 registers (except
// rsp) from a state array and an epilogue that stores them back, plus rsp and RFLAGS.

/// x86 register file by hardware number; [16] = rsp after the code, [17] = RFLAGS.
pub type X86State = [u64; 18];

pub struct ExecPage {
    ptr: *mut u8,
    len: usize,
}

impl ExecPage {
    pub fn new(len: usize) -> ExecPage {
        // SAFETY: anonymous private mapping, checked for failure.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert!(ptr != libc::MAP_FAILED, "mmap failed");
        ExecPage { ptr: ptr as *mut u8, len }
    }

    /// Install `site` wrapped in the state-loading trampoline.
    pub fn install(&mut self, site: &[u8]) {
        let code = trampoline(site);
        assert!(code.len() <= self.len);
        // SAFETY: the mapping is ours, `len` bytes long; W^X toggled around the write.
        unsafe {
            assert_eq!(libc::mprotect(self.ptr as *mut _, self.len, libc::PROT_READ | libc::PROT_WRITE), 0);
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.ptr, code.len());
            assert_eq!(libc::mprotect(self.ptr as *mut _, self.len, libc::PROT_READ | libc::PROT_EXEC), 0);
        }
    }

    /// Run the installed code on `st` (registers in, registers out).
    ///
    /// # Safety
    /// The installed site code must only touch memory the caller made valid through the
    /// register values in `st`, and must keep the stack balanced.
    pub unsafe fn run(&self, st: &mut X86State) {
        let f: extern "C" fn(*mut u64) = std::mem::transmute(self.ptr);
        f(st.as_mut_ptr());
    }
}

impl Drop for ExecPage {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe {
            libc::munmap(self.ptr as *mut _, self.len);
        }
    }
}

const CALLEE_SAVED: [Reg; 6] = [Reg::Rbx, Reg::Rbp, Reg::R12, Reg::R13, Reg::R14, Reg::R15];

fn trampoline(site: &[u8]) -> Vec<u8> {
    let mut a = Asm::new();
    for r in CALLEE_SAVED {
        a.push(r);
    }
    a.push(Reg::Rdi); // state pointer
    a.store(Size::S64, Mem::new(Reg::Rdi, 4 * 8), Reg::Rsp);
    for r in Reg::ALL {
        if r != Reg::Rsp && r != Reg::Rdi {
            a.load(Size::S64, r, Mem::new(Reg::Rdi, r.num() as i32 * 8));
        }
    }
    a.load(Size::S64, Reg::Rdi, Mem::new(Reg::Rdi, 7 * 8));
    a.raw(site);
    a.push(Reg::Rdi); // site's rdi; state pointer is at [rsp + 8]
    a.load(Size::S64, Reg::Rdi, Mem::new(Reg::Rsp, 8));
    for r in Reg::ALL {
        if r != Reg::Rsp && r != Reg::Rdi {
            a.store(Size::S64, Mem::new(Reg::Rdi, r.num() as i32 * 8), r);
        }
    }
    a.pop(Reg::Rax);
    a.store(Size::S64, Mem::new(Reg::Rdi, 7 * 8), Reg::Rax);
    a.store(Size::S64, Mem::new(Reg::Rdi, 16 * 8), Reg::Rsp);
    a.byte(0x9C); // pushfq
    a.pop(Reg::Rax);
    a.store(Size::S64, Mem::new(Reg::Rdi, 17 * 8), Reg::Rax);
    a.pop(Reg::Rax); // state pointer
    for r in CALLEE_SAVED.iter().rev() {
        a.pop(*r);
    }
    a.ret();
    let _ = Width::W64;
    a.into_bytes()
}

/// The JIT's register map (the Linux x86-64 JIT's `reg2hex`) and its scratch register.
pub const LINUX_MAP: [Reg; 11] = kops_jit::REGMAP;
pub const LINUX_SCRATCH: Reg = kops_jit::AUX_REG;
