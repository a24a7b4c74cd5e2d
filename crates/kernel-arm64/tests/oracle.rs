//! The arm64 kernel under qemu: one boot serves every check of `arm64_kernel_batch`; the
//! tests of the error paths boot too (a boot takes 3-6 s under TCG here). Each prints
//! `SKIPPED: <reason>` without the cached kernel or qemu (run scripts/arm64-kernel.sh),
//! unless `KOPS_REQUIRE_KERNEL=1`, when that is a failure.

use kops_isa::{asm::assemble, op, Insn};
use kops_kernel_arm64::{errno_name, object_btf, Error, Job, JobMap, Oracle, Run, Verdict};
use kops_object::{map_type, Object};

const XDP: u32 = 6;
const XDP_PASS: u32 = 2;
const EACCES: i32 = 13;
const EINVAL: i32 = 22;

fn asm(text: &str) -> Vec<Insn> {
    assemble(text).unwrap_or_else(|e| panic!("test program does not assemble: {e}"))
}

// AArch64 encodings, written from the field layouts of the Arm ARM (not copied from a
// disassembler), for the instructions the kernel's prologue and epilogue start and end with.
/// ADD (immediate), 64-bit: sf=1 op=0 S=0 100010 sh=0 imm12 Rn Rd. `mov xd, xn` for imm 0.
fn add_imm64(rd: u32, rn: u32, imm12: u32) -> u32 {
    0x9100_0000 | imm12 << 10 | rn << 5 | rd
}
/// HINT #imm (NOP = 0, PACIASP = 25, AUTIASP = 29, BTI c = 34, BTI jc = 38).
fn hint(imm: u32) -> u32 {
    0xd503_201f | imm << 5
}
/// STP (pre-index), 64-bit: opc=10 101 0 011 0 imm7 Rt2 Rn Rt, offset scaled by 8.
fn stp_pre64(rt: u32, rt2: u32, rn: u32, off: i32) -> u32 {
    0xa980_0000 | ((off / 8) as u32 & 0x7f) << 15 | rt2 << 10 | rn << 5 | rt
}
/// MOVZ, 64-bit, shift 0.
fn movz64(rd: u32, imm16: u32) -> u32 {
    0xd280_0000 | imm16 << 5 | rd
}
/// RET Xn.
fn ret(rn: u32) -> u32 {
    0xd65f_0000 | rn << 5
}
/// The values x10 holds at each `blr x10`, following MOVZ/MOVN/MOVK (64-bit) into x10.
fn blr_x10_targets(words: &[u32]) -> Vec<u64> {
    let mut x10 = 0u64;
    let mut out = Vec::new();
    for &w in words {
        let (imm, shift) = (((w >> 5) & 0xffff) as u64, ((w >> 21) & 3) * 16);
        if w & 0x1f == 10 {
            match w & 0xff80_0000 {
                0xd280_0000 => x10 = imm << shift,                              // MOVZ
                0x9280_0000 => x10 = !(imm << shift),                           // MOVN
                0xf280_0000 => x10 = (x10 & !(0xffff << shift)) | imm << shift, // MOVK
                _ => {}
            }
        }
        if w == 0xd63f_0140 {
            out.push(x10); // BLR x10
        }
    }
    out
}

const SP: u32 = 31;
const FP: u32 = 29;
const LR: u32 = 30;

/// The XDP program with a map: adds the packet's byte 12 to element 0 of an array map
/// (8-byte values) and passes the packet; drops packets shorter than 14 bytes.
fn map_program() -> Vec<Insn> {
    let mut p = asm("mov %r6, %r1
         ldxw %r2, [%r6+0]
         ldxw %r3, [%r6+4]
         mov %r4, %r2
         add %r4, 14
         jgt %r4, %r3, drop
         ldxb %r7, [%r2+12]
         stw [%r10-4], 0
         lddw %r1, 0
         mov %r2, %r10
         add %r2, -4
         call 1
         jeq %r0, 0, drop
         ldxdw %r1, [%r0+0]
         add %r1, %r7
         stxdw [%r0+0], %r1
         mov %r0, 2
         exit
         drop:
         mov %r0, 1
         exit");
    // `lddw %r1, 0` is the map reference: map 0 of the job (fd_array form).
    let at = p.iter().position(|i| i.is_ld_imm64()).expect("the program has an ld_imm64");
    p[at].src = op::PSEUDO_MAP_IDX;
    p
}

/// The oracle, or `None` after printing `SKIPPED: <reason>` (a failure instead under
/// `KOPS_REQUIRE_KERNEL=1`).
fn oracle() -> Option<Oracle> {
    if let Some(reason) = kops_kernel_arm64::skip_reason() {
        println!("SKIPPED: {reason}");
        return None;
    }
    Oracle::find().ok()
}

#[test]
fn arm64_kernel_batch() {
    let Some(oracle) = oracle() else { return };
    let constant =
        Job::new("ret42", XDP, vec![Insn::mov64_imm(0, 42), Insn::exit()]).with_run(Run::packet(vec![0u8; 64]));
    // r0 is never written: the verifier refuses the exit.
    let rejected = Job::new("no_r0", XDP, vec![Insn::exit()]);
    let mut counter = JobMap::new("counter", map_type::ARRAY, 4, 8, 4);
    counter.entries.push((0u32.to_le_bytes().to_vec(), 1000u64.to_le_bytes().to_vec()));
    let mut packet = vec![0u8; 64];
    packet[12] = 0x08;
    let mut with_map = Job::new("xdp_count", XDP, map_program())
        .with_map(counter)
        .with_run(Run::packet(packet.clone()))
        .with_run(Run::packet(vec![0u8; 10])); // shorter than an Ethernet header
    with_map.dump_maps = true;
    // A real object (clang-built, with BTF): one program passes, one reads past the packet.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernel/tests/data/reject.bpf.o");
    let obj = Object::load(path).unwrap_or_else(|e| panic!("{e}"));
    let btf = object_btf(&obj).unwrap_or_else(|e| panic!("{e}")).expect("reject.bpf.o has BTF");
    let from_obj = |name: &str| {
        let p = obj.program(name).unwrap_or_else(|| panic!("no program `{name}` in {path}"));
        Job::from_program(&obj, p)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_btf(btf.clone())
            .with_run(Run::packet(vec![0u8; 64]))
    };
    // An atomic add on the stack: -cpu max has LSE atomics, so the JIT uses them.
    let atomic = Job::new(
        "atomic",
        XDP,
        asm("mov %r1, 5
             stxdw [%r10-8], %r1
             mov %r2, 7
             lock add [%r10-8], %r2
             ldxdw %r0, [%r10-8]
             exit"),
    )
    .with_run(Run::packet(vec![0u8; 64]));
    // The map program again, each run from the maps as created: run 1 does not see run 0's
    // update.
    let mut isolated = with_map.clone();
    isolated.name = "xdp_isolated".into();
    isolated.dump_maps = false;
    isolated.isolate_runs = true;
    let mut packet5 = packet.clone();
    packet5[12] = 5;
    isolated.runs = vec![Run::packet(packet.clone()), Run::packet(packet5)];
    // A hash map keyed by the packet's byte 12, isolated runs: run 1 no longer sees run 0's key.
    let mut hash_prog = asm("ldxw %r2, [%r1+0]
         ldxw %r3, [%r1+4]
         mov %r4, %r2
         add %r4, 14
         jgt %r4, %r3, out
         ldxb %r6, [%r2+12]
         stxw [%r10-4], %r6
         stdw [%r10-16], 1
         lddw %r1, 0
         mov %r2, %r10
         add %r2, -4
         mov %r3, %r10
         add %r3, -16
         mov %r4, 0
         call 2
         out:
         mov %r0, 2
         exit");
    let at = hash_prog.iter().position(|i| i.is_ld_imm64()).expect("the program has an ld_imm64");
    hash_prog[at].src = op::PSEUDO_MAP_IDX;
    let mut hashed = Job::new("xdp_hash", XDP, hash_prog)
        .with_map(JobMap::new("seen", map_type::HASH, 4, 8, 16))
        .with_run(Run::packet(packet.clone()))
        .with_run(Run::packet({
            let mut p = packet.clone();
            p[12] = 5;
            p
        }));
    hashed.isolate_runs = true;
    let jobs = [constant, rejected, with_map, from_obj("ok"), from_obj("bad"), atomic, isolated, hashed];

    let results = std::env::temp_dir().join(format!("kops-arm64-results-{}", std::process::id()));
    let mut oracle = oracle;
    oracle.results = Some(results.clone());
    let report = oracle.run_report(&jobs).unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.cached);
    // The same batch again: answered from the results directory, without a boot.
    let again = oracle.run_report(&jobs).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&results);
    assert!(again.cached);
    assert_eq!(again.outcomes, report.outcomes);
    println!(
        "arm64 kernel {} ({}): boot {:.1} s, batch of {} jobs {:.1} s",
        oracle.release,
        oracle.package,
        report.boot.as_secs_f64(),
        jobs.len(),
        report.total.as_secs_f64()
    );
    let call_base = report.symbols.get("__bpf_call_base").copied();
    assert!(call_base.is_some_and(|a| a >= 0xffff_0000_0000_0000), "symbols: {:x?}", report.symbols);
    let out = &report.outcomes;
    assert_eq!(out.len(), jobs.len());

    // 1. A constant: accepted, JIT-compiled to arm64, returns 42.
    let c = &out[0];
    assert_eq!(c.verdict, Verdict::Accepted, "log: {}", c.log);
    assert_eq!(c.runs.len(), 1);
    let r = c.runs[0].as_ref().unwrap_or_else(|e| panic!("test run failed: {}", errno_name(*e)));
    assert_eq!(r.retval, 42);
    assert_eq!(r.data_out, vec![0u8; 64]);
    assert_eq!(c.xlated, jobs[0].insns, "nothing to rewrite in r0 = 42; exit");
    assert!(!c.jited.is_empty() && c.jited.len() % 4 == 0, "jited image: {} bytes", c.jited.len());
    assert_eq!(c.jited_func_lens.iter().sum::<u32>() as usize, c.jited.len());
    assert_eq!(c.jited_ksyms.len(), c.jited_func_lens.len());
    assert!(c.jited_ksyms.iter().all(|&a| a >= 0xffff_0000_0000_0000 && a % 4 == 0), "ksyms {:x?}", c.jited_ksyms);
    let w = c.jited_words();
    // Linux 6.12 arch/arm64/net/bpf_jit_comp.c build_prologue(): [bti jc when
    // CONFIG_ARM64_BTI_KERNEL], mov x9, lr; nop (the patchable entry for trampolines);
    // paciasp (CONFIG_ARM64_PTR_AUTH_KERNEL, on in Debian); stp x29, x30, [sp, #-16]!;
    // mov x29, sp.
    let start = usize::from(w.first() == Some(&hint(38)));
    let prologue = [add_imm64(9, LR, 0), hint(0), hint(25), stp_pre64(FP, LR, SP, -16), add_imm64(FP, SP, 0)];
    assert_eq!(
        &w[start..start + 5],
        &prologue,
        "prologue {:08x?}, expected {:08x?}",
        &w[start..(start + 5).min(w.len())],
        prologue
    );
    // r0 lives in x7: `mov x7, #42` is in the body; the epilogue moves x7 to x0, then
    // autiasp; ret.
    assert!(w.contains(&movz64(7, 42)), "no movz x7, #42 in {w:08x?}");
    let epilogue = [add_imm64(0, 7, 0), hint(29), ret(LR)];
    assert!(w.windows(3).any(|x| x == epilogue), "no mov x0, x7; autiasp; ret in {w:08x?}");

    // 2. A rejection: the verdict and the verifier's reason.
    let j = &out[1];
    match &j.verdict {
        Verdict::Rejected { errno, message, .. } => {
            assert_eq!(*errno, EACCES);
            assert!(message.contains("R0 !read_ok"), "message: {message}");
        }
        v => panic!("expected a rejection, got {v:?}"),
    }
    assert!(j.log.contains("R0 !read_ok"), "log: {}", j.log);
    assert!(j.jited.is_empty() && j.runs.is_empty());

    // 3. XDP with a map: the packet passes, the map element grows by the packet's byte 12;
    // a 10-byte packet is refused by BPF_PROG_TEST_RUN itself.
    let m = &out[2];
    assert_eq!(m.verdict, Verdict::Accepted, "log: {}", m.log);
    assert!(!m.jited.is_empty());
    let r = m.runs[0].as_ref().unwrap_or_else(|e| panic!("test run failed: {}", errno_name(*e)));
    assert_eq!(r.retval, XDP_PASS);
    assert_eq!(r.data_out, packet);
    assert_eq!(m.runs[1], Err(EINVAL));
    let elem0: Vec<_> = m.dumps.iter().filter(|(map, k, _)| *map == 0 && k == &0u32.to_le_bytes()).collect();
    assert_eq!(elem0.len(), 1, "dumps: {:?}", m.dumps);
    assert_eq!(elem0[0].2, 1008u64.to_le_bytes());
    assert_eq!(m.dumps.len(), 4, "an array map of 4 elements reads back 4 elements");

    // 4. The object's programs, loaded with their BTF.
    let (ok, bad) = (&out[3], &out[4]);
    assert_eq!(ok.btf_error, None);
    // With BTF line info, each line record maps to an address inside the image.
    let (base, len) = (ok.jited_ksyms[0], ok.jited.len() as u64);
    assert!(!ok.jited_lines.is_empty(), "no jited line info");
    assert!(ok.jited_lines.iter().all(|&(i, a)| (i as usize) < ok.xlated.len() && a >= base && a < base + len));
    assert_eq!(ok.verdict, Verdict::Accepted, "log: {}", ok.log);
    assert_eq!(ok.runs[0].as_ref().map(|r| r.retval), Ok(XDP_PASS));
    match &bad.verdict {
        Verdict::Rejected { errno, message, .. } => {
            assert_eq!(*errno, EACCES);
            assert!(message.contains("outside of the packet"), "message: {message}");
        }
        v => panic!("expected a rejection, got {v:?}"),
    }

    // 5. LSE: LDADD Xs, XZR, [Xn] (STADD), 64-bit, no acquire/release: size=11 111000
    // A=0 R=0 1 Rs o3=0 opc=000 00 Rn Rt=11111.
    let a = &out[5];
    assert_eq!(a.runs[0].as_ref().map(|r| r.retval), Ok(12), "log: {}", a.log);
    let w = a.jited_words();
    assert!(w.iter().any(|&x| x & 0xffe0_fc1f == 0xf820_001f), "no 64-bit STADD in {w:08x?}");

    // 6. Isolated runs: each sees element 0 at its initial 1000, and reports the maps'
    // non-zero elements after it.
    let i = &out[6];
    let maps_after = |r: usize| i.runs[r].as_ref().map(|x| x.maps.clone()).unwrap_or_else(|e| panic!("run {r}: {e}"));
    let elem0 = |v: u64| vec![(0usize, 0u32.to_le_bytes().to_vec(), v.to_le_bytes().to_vec())];
    assert_eq!(maps_after(0), elem0(1008));
    assert_eq!(maps_after(1), elem0(1005));
    assert!(i.map_errors.is_empty(), "{:?}", i.map_errors);
    let h = &out[7];
    assert_eq!(h.verdict, Verdict::Accepted, "log: {}", h.log);
    // The helper call: the xlated `call` holds the helper's offset from __bpf_call_base;
    // the JIT builds the absolute address in x10 (movz/movn, movk) and calls it with blr.
    let call = h.xlated.iter().find(|i| i.is_helper_call()).expect("an xlated helper call");
    let target = call_base.expect("__bpf_call_base").wrapping_add(call.imm as i64 as u64);
    assert!(blr_x10_targets(&h.jited_words()).contains(&target), "no blr to {target:#x} in {:08x?}", h.jited_words());
    for (r, key) in [(0usize, 8u32), (1, 5)] {
        let maps = h.runs[r].as_ref().map(|x| x.maps.clone()).unwrap_or_else(|e| panic!("run {r}: {e}"));
        assert_eq!(maps, vec![(0usize, key.to_le_bytes().to_vec(), 1u64.to_le_bytes().to_vec())], "run {r}");
    }
}

#[test]
fn a_guest_that_does_not_finish_is_a_timeout_with_the_console() {
    let Some(mut oracle) = oracle() else { return };
    // No kernel gets to /init within a second under TCG; and should one, the job runs a
    // program 4 billion times.
    oracle.timeout = Some(std::time::Duration::from_secs(1));
    oracle.results = None;
    let mut forever = Run::packet(vec![0u8; 64]);
    forever.repeat = u32::MAX;
    let job = Job::new("ret0", XDP, vec![Insn::mov64_imm(0, 0), Insn::exit()]).with_run(forever);
    match oracle.run(&[job]) {
        Err(e @ Error::Timeout { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("within 1 s"), "{msg}");
            assert!(msg.contains("never started") || msg.contains("0 of 1 jobs done"), "{msg}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn bad_jobs_are_errors_before_any_boot() {
    // No kernel needed: the batch is checked before qemu starts.
    assert!(Job::new("empty", XDP, vec![]).check().is_err());
    let Some(oracle) = oracle() else { return };
    match oracle.run(&[Job::new("empty", XDP, vec![])]) {
        Err(Error::Job(msg)) => assert!(msg.contains("job 0") && msg.contains("no instructions"), "{msg}"),
        other => panic!("expected a job error, got {other:?}"),
    }
    let mut m = JobMap::new("m", map_type::ARRAY, 4, 8, 1);
    m.entries.push((vec![0; 4], vec![0; 3]));
    let j = Job::new("bad_entry", XDP, vec![Insn::mov64_imm(0, 0), Insn::exit()]).with_map(m);
    match oracle.run(&[j]) {
        Err(Error::Job(msg)) => assert!(msg.contains("3-byte value"), "{msg}"),
        other => panic!("expected a job error, got {other:?}"),
    }
}

#[test]
fn a_guest_whose_init_cannot_run_stops_early_with_the_console() {
    let Some(mut oracle) = oracle() else { return };
    // Not an arm64 executable: the kernel cannot run /init, finds no root file system
    // either, and panics (panic=-1 and -no-reboot make qemu exit).
    let bogus = std::env::temp_dir().join(format!("kops-arm64-bogus-init-{}", std::process::id()));
    std::fs::write(&bogus, b"#!/nonexistent\n").expect("writing a file in the temp dir");
    oracle.loader = bogus.clone();
    oracle.results = None;
    let r = oracle.run(&[Job::new("ret0", XDP, vec![Insn::mov64_imm(0, 0), Insn::exit()])]);
    let _ = std::fs::remove_file(&bogus);
    match r {
        Err(e @ Error::Incomplete { .. }) => {
            let msg = e.to_string();
            println!("{msg}");
            assert!(msg.contains("never started"), "{msg}");
            assert!(msg.contains("init") || msg.contains("panic"), "the console tail explains nothing: {msg}");
        }
        other => panic!("expected an early stop, got {other:?}"),
    }
}

#[test]
fn a_job_that_hangs_the_guest_is_crashed_and_the_rest_run_in_a_new_boot() {
    let Some(mut oracle) = oracle() else { return };
    oracle.results = None;
    // Job 1 runs its program 4 billion times: the console stays silent, the guest is given
    // up after 3 s, and job 2 runs in a second boot.
    oracle.stall = std::time::Duration::from_secs(3);
    let ret = |name: &str, v: i32| Job::new(name, XDP, vec![Insn::mov64_imm(0, v), Insn::exit()]);
    let mut forever = Run::packet(vec![0u8; 64]);
    forever.repeat = u32::MAX;
    let jobs = [
        ret("first", 1).with_run(Run::packet(vec![0u8; 64])),
        ret("hangs", 2).with_run(forever),
        ret("third", 3).with_run(Run::packet(vec![0u8; 64])),
    ];
    let r = oracle.run_resuming(&jobs).unwrap_or_else(|e| panic!("{e}"));
    let retval = |i: usize| r.outcomes[i].runs.first().and_then(|x| x.as_ref().ok()).map(|x| x.retval);
    assert_eq!(r.outcomes.len(), 3);
    assert_eq!(retval(0), Some(1));
    match &r.outcomes[1].verdict {
        Verdict::Crashed { reason } => assert!(reason.contains("wrote nothing for 3 s"), "{reason}"),
        v => panic!("expected a crash, got {v:?}"),
    }
    assert_eq!(retval(2), Some(3));
}
