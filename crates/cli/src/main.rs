//! The `kops` command. Each subcommand lives in its own module under `cmd/` and parses its
//! own arguments (clap); this file only dispatches.

mod cmd;

use std::process::ExitCode;

/// (name, one-line summary, entry point). Entry points take the arguments after the
/// subcommand name and return the process exit status.
type Entry = fn(Vec<String>) -> anyhow::Result<u8>;
const COMMANDS: &[(&str, &str, Entry)] = &[
    ("disasm", "print the programs of an object in llvm-objdump syntax", cmd::disasm::main),
    ("run", "run one program of an object on a runtime", cmd::run::main),
    ("conformance", "run the eBPF conformance suite on a runtime", cmd::conformance::main),
    ("conformance-plugin", "speak the bpf_conformance plugin protocol", cmd::conformance::plugin_main),
    ("verify", "load programs into the kernel verifier", cmd::verify::main),
    ("diff", "differential testing of runtimes against an oracle", cmd::diff::main),
    ("jit-diff", "compare our x86-64 JIT with the kernel's jited image", cmd::jit_diff::main),
    ("inspect", "list the idiom sites the recognizer finds", cmd::inspect::main),
    ("rewrite", "rewrite an object's programs into kinsn sites", cmd::rewrite::main),
    ("bench", "benchmark runtimes side by side against the kernel JIT", cmd::bench::main),
    ("prove", "prove native emits equal to their proof sequences", cmd::prove::main),
];

fn usage() -> String {
    let mut s = String::from(
        "kops: faster eBPF through verified native operations\n\n\
         usage: kops <command> [args...]   (kops <command> --help for details)\n\ncommands:\n",
    );
    for (name, what, _) in COMMANDS {
        s.push_str(&format!("  {name:<20} {what}\n"));
    }
    s
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    if args.len() < 2 || matches!(args[1].as_str(), "-h" | "--help" | "help") {
        print!("{}", usage());
        return ExitCode::from(if args.len() < 2 { 2 } else { 0 });
    }
    let name = args.remove(1);
    let Some((_, _, entry)) = COMMANDS.iter().find(|(n, _, _)| *n == name) else {
        eprint!("kops: unknown command `{name}`\n\n{}", usage());
        return ExitCode::from(2);
    };
    // clap expects argv[0]; give it "kops <command>".
    args[0] = format!("kops {name}");
    match entry(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kops {name}: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
