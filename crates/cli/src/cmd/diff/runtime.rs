//! The runtimes `kops diff` compares: the kernel (BPF_PROG_TEST_RUN on maps it resets
//! between inputs) and every userspace engine, each run on one input to an [`Outcome`].

use std::collections::BTreeMap;
use std::rc::Rc;

use kops_kernel::{LoadedProg, MapSet, TestRun};
use kops_object::{map_type, Object, Program};
use kops_vm::compare::{MapState, Outcome};
use kops_vm::{CtxKind, ProgInput, Vm, VmError};
use kops_kernel::KernelError;


pub(super) enum RunOutcome {
    Ran(Outcome),
    /// The runtime does not take this input (the kernel's 14-byte minimum, ...).
    Refused(String),
    /// The runtime failed on it (a fault, an error): a difference if the oracle ran it.
    Failed(String),
}

/// A userspace engine by name, through the CLI's one dispatch point (`run::engine`), where
/// the JIT (`jit`) and the Kops JIT (`kops`) plug in.
pub(super) fn vm_engine(name: &str) -> Result<Box<dyn kops_vm::Engine>, String> {
    crate::cmd::run::engine(name).map_err(|e| format!("{e:#}"))
}

pub(super) fn check_runtime_name(n: &str) -> Result<(), String> {
    if n == "kernel" {
        return Ok(());
    }
    vm_engine(n).map(|_| ()).map_err(|e| format!("runtime `{n}`: {e} (or `kernel`)"))
}

/// Whether the interpreter's result on `input` changes when its stack starts poisoned and
/// moved ([`kops_vm::VmOptions::poison_stack`]): then the program reads uninitialized stack
/// or lets addresses into its result, which correct runtimes need not agree on.
pub(super) fn address_dependent(obj: &Object, prog: &Program, input: &ProgInput, compare: &[String]) -> bool {
    let run = |poison: bool| -> Option<(Vm, Outcome)> {
        let mut vm = Vm::new(obj).ok()?;
        vm.options.poison_stack = poison;
        let id = vm.load(&prog.name).ok()?;
        let r = vm.run(id, input).ok()?;
        let kind = CtxKind::for_prog_type(prog.prog_type);
        let maps = vm.snapshot_maps(compare);
        Some((vm, Outcome { r0: r.r0, data_out: kind.has_packet().then_some(r.data_out), maps }))
    };
    // The first Vm stays alive during the second run, so their maps get other addresses.
    let Some((_vm_a, a)) = run(false) else { return false };
    let Some((_vm_b, b)) = run(true) else { return false };
    !kops_vm::compare::differences(&a, &b, false).is_empty()
}

/// A fresh Vm of userspace runtime `name` with `prog` loaded. One verifier per object is
/// shared by these Vms, so each program is verified once, not once per input.
fn load_vm(name: &str, obj: &Object, prog: &Program, verifier: &Rc<dyn kops_vm::Verifier>) -> Result<(Vm, kops_vm::ProgId), String> {
    let vm = Vm::with_verifier(Some(obj), vm_engine(name)?, Box::new(verifier.clone()))
        .map_err(|e| format!("setting up the object: {e}"))?;
    let id = vm.load(&prog.name).map_err(|e| format!("load: {e}"))?;
    Ok((vm, id))
}

/// One program on one runtime.
pub(super) enum Runtime<'a> {
    Kernel {
        prog: LoadedProg,
        maps: &'a MapSet,
        kind: CtxKind,
        cpu: usize,
        /// Keys each map held (non-zero) after the last run: what the next reset restores.
        dirty: std::cell::RefCell<BTreeMap<String, Vec<Vec<u8>>>>,
    },
    Vm { name: String, obj: &'a Object, prog: &'a Program, verifier: Rc<dyn kops_vm::Verifier> },
}

pub(super) fn is_array(t: u32) -> bool {
    matches!(t, map_type::ARRAY | map_type::PERCPU_ARRAY)
}

pub(super) fn canon_insert(out: &mut BTreeMap<Vec<u8>, Vec<u8>>, array: bool, k: Vec<u8>, v: Vec<u8>) {
    if array && v.iter().all(|&b| b == 0) {
        return;
    }
    out.insert(k, v);
}

impl Runtime<'_> {
    pub(super) fn name(&self) -> &str {
        match self {
            Runtime::Kernel { .. } => "kernel",
            Runtime::Vm { name, .. } => name,
        }
    }

    /// Maps this runtime can read back (by name).
    pub(super) fn comparable_maps(&self) -> Vec<String> {
        match self {
            Runtime::Kernel { maps, .. } => {
                maps.maps.iter().filter(|m| m.undumpable().is_none()).map(|m| m.def.name.clone()).collect()
            }
            Runtime::Vm { obj, .. } => {
                obj.maps.iter().filter(|d| kops_vm::maps::comparable(d.map_type)).map(|d| d.name.clone()).collect()
            }
        }
    }

    /// Whether this runtime can load the program at all (maps, helpers, the verifier gate,
    /// compilation), before any input is compared.
    pub(super) fn check_load(&self) -> Result<(), String> {
        match self {
            Runtime::Kernel { .. } => Ok(()),
            Runtime::Vm { name, obj, prog, verifier } => load_vm(name, obj, prog, verifier).map(|_| ()),
        }
    }



    pub(super) fn run(&self, input: &ProgInput, compare: &[String]) -> Result<RunOutcome, KernelError> {
        match self {
            Runtime::Kernel { prog, maps, kind, cpu, dirty } => {
                for (name, keys) in std::mem::take(&mut *dirty.borrow_mut()) {
                    if let Some(m) = maps.get(&name) {
                        m.reset_keys(&keys)?;
                    }
                }
                let run = if kind.has_packet() {
                    TestRun { data_in: Some(&input.data), ctx_in: input.ctx.as_deref(), ..TestRun::default() }
                } else {
                    TestRun { ctx_in: Some(&input.data), ..TestRun::default() }
                };
                let r = match prog.test_run(&run) {
                    Ok(r) => r,
                    Err(KernelError::Sys { op, err }) => {
                        let e = err.raw_os_error().unwrap_or(0);
                        let text = op.to_string();
                        return Ok(if matches!(e, 22 | 95 | 524) {
                            RunOutcome::Refused(text)
                        } else {
                            RunOutcome::Failed(text)
                        });
                    }
                    Err(e) => return Err(e),
                };
                let mut state = MapState::new();
                for m in &maps.maps {
                    if !compare.contains(&m.def.name) {
                        continue;
                    }
                    let d = m.dump_nonzero()?;
                    dirty.borrow_mut().insert(m.def.name.clone(), d.entries.iter().map(|(k, _)| k.clone()).collect());
                    let mut entries = BTreeMap::new();
                    for (k, vals) in d.entries {
                        let v = if d.per_cpu { vals.get(*cpu).cloned().unwrap_or_default() } else { vals[0].clone() };
                        canon_insert(&mut entries, is_array(m.def.map_type), k, v);
                    }
                    state.insert(m.def.name.clone(), entries);
                }
                Ok(RunOutcome::Ran(Outcome {
                    r0: r.retval as u64,
                    data_out: kind.has_packet().then_some(r.data_out),
                    maps: state,
                }))
            }
            Runtime::Vm { name, obj, prog, verifier } => {
                // A fresh Vm per input: maps exactly as the object defines them.
                let (vm, id) = match load_vm(name, obj, prog, verifier) {
                    Ok(v) => v,
                    Err(e) => return Ok(RunOutcome::Failed(e)),
                };
                let r = match vm.run(id, input) {
                    Ok(r) => r,
                    Err(VmError::Input(m)) => return Ok(RunOutcome::Refused(format!("input: {m}"))),
                    Err(e) => return Ok(RunOutcome::Failed(e.to_string())),
                };
                let kind = CtxKind::for_prog_type(prog.prog_type);
                let state = vm.snapshot_maps(compare);
                Ok(RunOutcome::Ran(Outcome { r0: r.r0, data_out: kind.has_packet().then_some(r.data_out), maps: state }))
            }
        }
    }
}

