//! One module per subcommand.
pub mod bench;
pub mod conformance;
pub mod diff;
pub mod disasm;
pub mod inspect;
pub mod jit_diff;
pub mod prove;
pub mod rewrite;
pub mod run;
pub mod verify;
