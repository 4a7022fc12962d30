//! The `econtext` command-line tool: `econtext call` and `econtext run`
//! on one target or, with `-i INVENTORY`, on every host of a pattern.
//! The subcommands live in `cli/`; exit codes are documented there and
//! in the README.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Started by a master as `?agent=rust`: this binary is the context.
    econtext::agent::run_if_child(econtext::agent::Services::default);
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // Bad usage is 64, as for every other usage error; --help
            // and --version succeed.
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    ExitCode::from(cli::main(cli))
}
