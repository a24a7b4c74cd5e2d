//! The verification gate in front of native code.
//!
//! Native engines ([`crate::jit_engine::JitEngine`], [`crate::jit_engine::KopsEngine`])
//! have no per-access checks and no instruction budget: what keeps a bad program from
//! corrupting or hanging the host process is the verifier's guarantee. So a native engine
//! compiles a program only together with a [`Verified`] token for exactly that image, and
//! the only code that makes such a token is [`crate::Vm`]'s load path, right after its
//! [`Verifier`] accepted the program.
//!
//! - [`Verifier`] is an `unsafe trait`: implementing it is a promise that `Ok` means the
//!   program is safe to run unchecked. `kops_kernel::KernelVerifier` (the running kernel's
//!   verifier) is the default one.
//! - [`Unverified`] is the explicit opt-out, for programs known safe by other means (the
//!   conformance suite, generated test programs). It is named so that it shows up in review.
//! - A Vm built without a verifier ([`crate::Vm::with_engine`]) refuses every program on a
//!   native engine, with a message that says what to do.

use kops_object::{Object, Program};
use std::hash::{Hash, Hasher};

/// What a verifier is asked: one program as the runtime will run it. `program.insns` are
/// the instructions as given: kinsn sites intact, map references still indices into
/// `object.maps` (the runtime relocates them only after the verdict).
pub struct VerifyRequest<'a> {
    /// The object the program came from (maps, license, BTF); `None` for raw instructions.
    pub object: Option<&'a Object>,
    pub program: &'a Program,
    /// The registry that lowers the program's kinsn sites to their proof sequences (the
    /// verifier checks proof sequences, never sites).
    pub registry: Option<&'a kops_kinsn::Registry>,
}

/// Why a program may not run natively.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The verifier rejected the program. `pc` is in the program's own (unlowered)
    /// numbering; `reason` is the verifier's message with the instruction it points at.
    #[error("rejected by the {verifier} verifier{}: {reason}", .pc.map(|p| format!(" at insn {p}")).unwrap_or_default())]
    Rejected { verifier: String, pc: Option<usize>, reason: String },
    /// The program could not be verified at all (no privilege, no such program type, no
    /// verifier configured). Says why and what to do.
    #[error("cannot be verified: {0}")]
    Unavailable(String),
}

/// A verifier for native code.
///
/// # Safety
///
/// Returning `Ok` from [`Verifier::verify`] licenses the runtime to run the program as
/// native code without any per-access check. An implementation must return `Ok` only for
/// programs that cannot access memory outside what the runtime gives them, cannot loop
/// without bound and call helpers only with arguments the helpers accept.
pub unsafe trait Verifier {
    /// Short name for messages (`kernel`, `none`, ...).
    fn name(&self) -> &str;
    fn verify(&self, req: &VerifyRequest<'_>) -> Result<(), VerifyError>;
}

// SAFETY: forwards to a verifier that upholds the contract itself.
unsafe impl<V: Verifier + ?Sized> Verifier for std::rc::Rc<V> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn verify(&self, req: &VerifyRequest<'_>) -> Result<(), VerifyError> {
        (**self).verify(req)
    }
}

/// The verifier of a Vm made without one: refuses everything, saying how to get one.
pub struct NoVerifier;

// SAFETY: never returns Ok.
unsafe impl Verifier for NoVerifier {
    fn name(&self) -> &str {
        "none"
    }
    fn verify(&self, _req: &VerifyRequest<'_>) -> Result<(), VerifyError> {
        Err(VerifyError::Unavailable(
            "this Vm has no verifier (build it with Vm::with_verifier and kops_kernel::KernelVerifier, or opt out explicitly with kops_vm::Unverified)".into(),
        ))
    }
}

/// The explicit opt-out: accepts every program **without checking it**. A bad program
/// then crashes or hangs the process. For programs known safe by other means only.
pub struct Unverified {
    why: Option<String>,
}

impl Unverified {
    /// Prints a warning on stderr for every program it lets through, with `why` (the
    /// command line's `--unverified`).
    pub fn loud(why: impl Into<String>) -> Unverified {
        Unverified { why: Some(why.into()) }
    }
    /// Silent: for test programs and suites that are safe by construction.
    pub fn quiet() -> Unverified {
        Unverified { why: None }
    }
}

// SAFETY: this is the documented opt-out; whoever constructs it takes the responsibility
// that the trait's contract asks for.
unsafe impl Verifier for Unverified {
    fn name(&self) -> &str {
        "unverified"
    }
    fn verify(&self, req: &VerifyRequest<'_>) -> Result<(), VerifyError> {
        if let Some(why) = &self.why {
            eprintln!(
                "warning: program `{}` runs as native code WITHOUT verification ({why}); a bad program can crash or hang this process",
                req.program.name
            );
        }
        Ok(())
    }
}

/// Evidence that a verifier accepted a program, bound to the exact instructions the
/// engine compiles. Only [`crate::Vm`] makes these, after [`Verifier::verify`] returned
/// `Ok`; engines check [`Verified::covers`] before emitting native code.
#[derive(Debug)]
pub struct Verified {
    digest: u64,
    len: usize,
    verifier: String,
}

impl Verified {
    pub(crate) fn seal(image_insns: &[kops_isa::Insn], verifier: &str) -> Verified {
        Verified { digest: digest(image_insns), len: image_insns.len(), verifier: verifier.to_string() }
    }
    /// Whether this token was made for exactly `insns`.
    pub fn covers(&self, insns: &[kops_isa::Insn]) -> bool {
        self.len == insns.len() && self.digest == digest(insns)
    }
    /// The verifier that accepted the program.
    pub fn verifier(&self) -> &str {
        &self.verifier
    }
}

fn digest(insns: &[kops_isa::Insn]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for i in insns {
        i.hash(&mut h);
    }
    h.finish()
}

/// What a native engine says when it is handed an image without a matching token.
pub fn require(prog: &crate::ProgImage<'_>, engine: &str) -> Result<(), crate::VmError> {
    match prog.verified {
        Some(v) if v.covers(prog.insns) => Ok(()),
        Some(_) => Err(crate::VmError::Unverified {
            prog: prog.name.to_string(),
            msg: format!("the `{engine}` runtime was handed instructions that differ from the verified ones"),
        }),
        None => Err(crate::VmError::Unverified {
            prog: prog.name.to_string(),
            msg: format!("the `{engine}` runtime runs native code only for programs a verifier accepted, and this one was not verified"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit_engine::JitEngine;
    use crate::{CtxKind, Engine, HelperTable, ProgImage};
    use kops_isa::asm::assemble;

    fn image<'a>(insns: &'a [kops_isa::Insn], helpers: &'a HelperTable, verified: Option<&'a Verified>) -> ProgImage<'a> {
        ProgImage {
            name: "t",
            prog_type: kops_object::ProgType::Unspec,
            ctx: CtxKind::Mem,
            insns,
            subprogs: &[],
            helpers,
            conformance: true,
            exception_cb: None,
            verified,
        }
    }

    #[test]
    fn a_token_covers_only_the_instructions_it_was_sealed_on() {
        let a = assemble("mov %r0, 1\nexit").unwrap();
        let b = assemble("mov %r0, 2\nexit").unwrap();
        let t = Verified::seal(&a, "test");
        assert!(t.covers(&a));
        assert!(!t.covers(&b));
        assert!(!t.covers(&a[..1]));
        assert_eq!(t.verifier(), "test");
    }

    #[test]
    fn native_engines_compile_only_with_a_matching_token() {
        let a = assemble("mov %r0, 1\nexit").unwrap();
        let b = assemble("mov %r0, 2\nexit").unwrap();
        let h = HelperTable::conformance();
        let jit = JitEngine::new().unwrap();
        let kops = crate::jit_engine::KopsEngine::new(kops_kinsn::Registry::default()).unwrap();
        let token = Verified::seal(&a, "test");
        for e in [&jit as &dyn Engine, &kops] {
            assert!(e.native());
            match e.compile(&image(&a, &h, None)) {
                Err(crate::VmError::Unverified { msg, .. }) => assert!(msg.contains("not verified"), "{msg}"),
                Err(other) => panic!("{}: {other}", e.name()),
                Ok(_) => panic!("{}: compiled without a token", e.name()),
            }
            match e.compile(&image(&b, &h, Some(&token))) {
                Err(crate::VmError::Unverified { msg, .. }) => assert!(msg.contains("differ"), "{msg}"),
                Err(other) => panic!("{}: {other}", e.name()),
                Ok(_) => panic!("{}: compiled with another program's token", e.name()),
            }
            assert!(e.compile(&image(&a, &h, Some(&token))).is_ok(), "{}", e.name());
        }
        assert!(!crate::interp::Interp.native());
    }

    #[test]
    fn unverified_is_an_explicit_opt_out() {
        let insns = assemble("mov %r0, 7\nexit").unwrap();
        let run = |v: Box<dyn Verifier>| {
            let vm = crate::Vm::with_verifier(None, Box::new(JitEngine::new().unwrap()), v).unwrap();
            let id = vm.load_insns("t", insns.clone(), Vec::new(), kops_object::ProgType::Unspec, CtxKind::Mem, HelperTable::conformance(), true)?;
            Ok::<u64, crate::VmError>(vm.run(id, &crate::ProgInput { data: Vec::new(), ctx: None })?.r0)
        };
        assert!(matches!(run(Box::new(NoVerifier)), Err(crate::VmError::Verify { .. })));
        assert_eq!(run(Box::new(Unverified::quiet())).unwrap(), 7);
    }
}
