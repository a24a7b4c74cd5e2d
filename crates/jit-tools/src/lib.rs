//! Untrusted helpers around the x86-64 JIT (`kops-jit`), kept out of the trusted base
//! (see docs/TRUST.md): nothing here decides what native code a program gets.
//!
//! - [`gen`]: random valid eBPF programs for differential tests and the fuzz target,
//!   driven by any [`gen::Choices`] source (a seeded PRNG or the fuzzer's input bytes);
//! - [`xlated`]: JIT a kernel xlated dump the way the kernel did, for `kops jit-diff` and
//!   the golden tests;
//! - [`disasm`]: iced-x86 listings of native code, per input slot.

pub mod disasm;
pub mod gen;
pub mod xlated;
