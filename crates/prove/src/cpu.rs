//! Runs raw x86-64 bytes on this CPU from a full register/flag state, with a scratch data
//! region and a scratch stack, and reads the state back: the concrete side of
//! [`crate::check_model`]. Same idea as the einsn test harness's `ExecPage`, plus RFLAGS in,
//! an arbitrary rsp, and no use of the stack between the loads and stores of the state (the
//! code under test may point rsp anywhere).

/// Bytes of each scratch region the state generator may point addresses into.
pub const REGION: usize = 256;

const PAGE: usize = 4096;
/// Data mapping: page 0 holds the state block, the data region sits in page 1, the stack
/// region near the top of a 14-page stack so that a signal frame pushed below rsp lands in
/// mapped memory (and below the compared region).
const MAP_LEN: usize = 16 * PAGE;
const DATA_OFF: usize = PAGE + 0x400;
const STACK_OFF: usize = 15 * PAGE;

const SLOT_FLAGS_IN: usize = 16;
const SLOT_FLAGS_OUT: usize = 17;
const SLOT_SAVED_RSP: usize = 18;

/// Register file by hardware number (rax=0 .. r15=15) plus RFLAGS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuState {
    pub gpr: [u64; 16],
    pub rflags: u64,
}

/// RFLAGS bits the state generator may set: CF PF AF ZF SF DF OF (bit 1 is always one).
/// Never TF (traps) or AC (Linux sets CR0.AM, so AC would fault unaligned accesses).
pub const SETTABLE_FLAGS: u64 = 1 | 1 << 2 | 1 << 4 | 1 << 6 | 1 << 7 | 1 << 10 | 1 << 11;

pub struct Cpu {
    data: *mut u8,
    code: *mut u8,
}

// SAFETY: the mappings belong to this value alone; it is used from one thread at a time.
unsafe impl Send for Cpu {}

impl Cpu {
    pub fn new() -> std::io::Result<Cpu> {
        let map = |len| {
            // SAFETY: anonymous private mapping, checked for failure.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(p as *mut u8)
            }
        };
        let data = map(MAP_LEN)?;
        let code = map(PAGE)?;
        Ok(Cpu { data, code })
    }

    /// Address of the first byte of the data region.
    pub fn data_base(&self) -> u64 {
        self.data as u64 + DATA_OFF as u64
    }

    /// Address of the first byte of the stack region.
    pub fn stack_base(&self) -> u64 {
        self.data as u64 + STACK_OFF as u64
    }

    pub fn data_region(&mut self) -> &mut [u8] {
        // SAFETY: inside our mapping.
        unsafe { std::slice::from_raw_parts_mut(self.data.add(DATA_OFF), REGION) }
    }

    pub fn stack_region(&mut self) -> &mut [u8] {
        // SAFETY: inside our mapping.
        unsafe { std::slice::from_raw_parts_mut(self.data.add(STACK_OFF), REGION) }
    }

    fn slots(&mut self) -> &mut [u64] {
        // SAFETY: page 0 of our mapping, 8-aligned.
        unsafe { std::slice::from_raw_parts_mut(self.data as *mut u64, 32) }
    }

    /// Put `site` between the state-loading prologue and the state-storing epilogue.
    pub fn install(&mut self, site: &[u8]) {
        let code = trampoline(self.data as u64, site);
        assert!(code.len() <= PAGE, "site too long");
        // SAFETY: our own mapping; W^X toggled around the copy.
        unsafe {
            assert_eq!(libc::mprotect(self.code as *mut _, PAGE, libc::PROT_READ | libc::PROT_WRITE), 0);
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.code, code.len());
            assert_eq!(libc::mprotect(self.code as *mut _, PAGE, libc::PROT_READ | libc::PROT_EXEC), 0);
        }
    }

    /// Run the installed site from `st`; returns the state after it.
    ///
    /// # Safety
    /// Every memory access of the site must fall inside the data or stack region (or be one
    /// that cannot fault, like a prefetch), rsp must point into the stack region while the
    /// site pushes or pops, and control must leave the site at its end.
    pub unsafe fn run(&mut self, st: &CpuState) -> CpuState {
        let slots = self.slots();
        slots[..16].copy_from_slice(&st.gpr);
        slots[SLOT_FLAGS_IN] = (st.rflags & SETTABLE_FLAGS) | 2;
        let f: extern "C" fn() = std::mem::transmute(self.code);
        f();
        let slots = self.slots();
        let mut out = CpuState { gpr: [0; 16], rflags: slots[SLOT_FLAGS_OUT] };
        out.gpr.copy_from_slice(&slots[..16]);
        out
    }
}

impl Drop for Cpu {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mappings.
        unsafe {
            libc::munmap(self.data as *mut _, MAP_LEN);
            libc::munmap(self.code as *mut _, PAGE);
        }
    }
}

/// `mov r64, [rax + disp32]` (load) or `mov [rax + disp32], r64` (store).
fn rax_rel(out: &mut Vec<u8>, opcode: u8, r: usize, disp: usize) {
    out.push(0x48 | ((r >> 3) as u8) << 2);
    out.push(opcode);
    out.push(0x80 | ((r & 7) as u8) << 3);
    out.extend_from_slice(&(disp as u32).to_le_bytes());
}

fn trampoline(state: u64, site: &[u8]) -> Vec<u8> {
    let mut c = Vec::new();
    // Callee-saved registers of the caller: rbx rbp r12 r13 r14 r15.
    c.extend_from_slice(&[0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57]);
    c.extend_from_slice(&[0x48, 0xb8]); // movabs rax, state
    c.extend_from_slice(&state.to_le_bytes());
    c.extend_from_slice(&[0xff, 0xb0]); // push qword [rax + flags_in]
    c.extend_from_slice(&((SLOT_FLAGS_IN * 8) as u32).to_le_bytes());
    c.push(0x9d); // popfq
    rax_rel(&mut c, 0x89, 4, SLOT_SAVED_RSP * 8); // mov [rax + saved], rsp
    for r in 1..16 {
        rax_rel(&mut c, 0x8b, r, r * 8); // rsp included: the site runs on the scratch stack
    }
    rax_rel(&mut c, 0x8b, 0, 0);
    c.extend_from_slice(site);
    // From here on nothing may touch the stack until rsp is restored.
    c.extend_from_slice(&[0x48, 0xa3]); // movabs [state], rax
    c.extend_from_slice(&state.to_le_bytes());
    c.extend_from_slice(&[0x48, 0xb8]);
    c.extend_from_slice(&state.to_le_bytes());
    for r in 1..16 {
        rax_rel(&mut c, 0x89, r, r * 8);
    }
    rax_rel(&mut c, 0x8b, 4, SLOT_SAVED_RSP * 8); // mov rsp, [rax + saved]
    c.extend_from_slice(&[0x9c, 0x59]); // pushfq; pop rcx
    rax_rel(&mut c, 0x89, 1, SLOT_FLAGS_OUT * 8);
    c.push(0xfc); // cld: the ABI wants DF clear on return
    c.extend_from_slice(&[0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c, 0x5d, 0x5b, 0xc3]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_flags_and_stack_round_trip() {
        let mut cpu = Cpu::new().unwrap();
        // push rax; pop rbx; add rcx, rdx
        cpu.install(&[0x50, 0x5b, 0x48, 0x01, 0xd1]);
        let mut st = CpuState { gpr: std::array::from_fn(|i| 0x1111 * i as u64), rflags: 1 << 10 };
        st.gpr[0] = 0xdead_beef_0bad_f00d;
        st.gpr[1] = u64::MAX;
        st.gpr[2] = 1;
        st.gpr[4] = cpu.stack_base() + 128;
        // SAFETY: the pushes stay in the stack region.
        let out = unsafe { cpu.run(&st) };
        assert_eq!(out.gpr[3], st.gpr[0]);
        assert_eq!(out.gpr[1], 0);
        assert_eq!(out.gpr[4], st.gpr[4]);
        assert_eq!(out.rflags & 0x41, 0x41, "CF and ZF from the add");
        assert_ne!(out.rflags & 1 << 10, 0, "DF set on entry stays set");
        assert_eq!(cpu.stack_region()[120..128], st.gpr[0].to_le_bytes());
    }
}
