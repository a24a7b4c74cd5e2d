//! The `kops` command: clap subcommands, one module per command under `cmd/`, each with
//! its `Args` and a `run` that returns the exit status. This file only parses and
//! dispatches.

mod cmd;
#[cfg(test)]
mod filetests;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "kops", about = "kops: faster eBPF through verified native operations", subcommand_required = true, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per command; its `Args` doc comment is the help text.
#[derive(Subcommand, Debug)]
enum Command {
    Disasm(cmd::disasm::Args),
    Run(cmd::run::Args),
    Conformance(cmd::conformance::Args),
    /// speak the bpf_conformance plugin protocol (its own argument conventions)
    #[command(disable_help_flag = true)]
    ConformancePlugin {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    Verify(cmd::verify::Args),
    Diff(cmd::diff::Args),
    JitDiff(cmd::jit_diff::Args),
    Inspect(cmd::inspect::Args),
    Rewrite(cmd::rewrite::Args),
    Bench(cmd::bench::Args),
    Prove(cmd::prove::Args),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Disasm(_) => "disasm",
            Command::Run(_) => "run",
            Command::Conformance(_) => "conformance",
            Command::ConformancePlugin { .. } => "conformance-plugin",
            Command::Verify(_) => "verify",
            Command::Diff(_) => "diff",
            Command::JitDiff(_) => "jit-diff",
            Command::Inspect(_) => "inspect",
            Command::Rewrite(_) => "rewrite",
            Command::Bench(_) => "bench",
            Command::Prove(_) => "prove",
        }
    }
}

fn dispatch(command: Command, argv: &[String]) -> anyhow::Result<u8> {
    match command {
        Command::Disasm(a) => cmd::disasm::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Conformance(a) => cmd::conformance::run(a),
        Command::ConformancePlugin { args } => {
            let argv = std::iter::once("kops conformance-plugin".to_string()).chain(args).collect();
            cmd::conformance::plugin_main(argv)
        }
        Command::Verify(a) => cmd::verify::run(a),
        Command::Diff(a) => cmd::diff::run(a),
        Command::JitDiff(a) => cmd::jit_diff::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Rewrite(a) => cmd::rewrite::run(a),
        Command::Bench(a) => cmd::bench::run(a, argv.join(" ")),
        Command::Prove(a) => cmd::prove::run(a),
    }
}

/// Parses `argv` (`kops <command> ...`) and runs it: the exit status. Usage errors are 2,
/// `--help` 0, a command's error 1 (printed as `kops <command>: error: ...`).
pub fn run_cli<S: AsRef<str>>(argv: &[S]) -> u8 {
    let argv: Vec<String> = argv.iter().map(|s| s.as_ref().to_string()).collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let name = cli.command.name();
    match dispatch(cli.command, &argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kops {name}: error: {e:#}");
            1
        }
    }
}

fn main() -> ExitCode {
    // Like other command-line tools: a closed stdout (`kops verify ... | head`) ends the
    // process quietly instead of making println! panic.
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let argv: Vec<String> = std::env::args().collect();
    ExitCode::from(run_cli(&argv))
}

#[cfg(test)]
mod tests {
    use super::run_cli;

    #[test]
    fn usage_errors_are_2_and_help_is_0() {
        assert_eq!(run_cli(&["kops"]), 2);
        assert_eq!(run_cli(&["kops", "--help"]), 0);
        assert_eq!(run_cli(&["kops", "no-such-command"]), 2);
        assert_eq!(run_cli(&["kops", "run"]), 2, "missing FILE");
        assert_eq!(run_cli(&["kops", "run", "x.o", "--no-such-flag"]), 2);
        assert_eq!(run_cli(&["kops", "run", "--help"]), 0);
        // A command that fails on its input is 1 (an error, printed), not a usage error.
        assert_eq!(run_cli(&["kops", "run", "/nonexistent/x.o"]), 1);
    }
}
