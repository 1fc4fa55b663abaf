//! `arena-inspect`: the debugging CLI for shmarena arenas. Everything is in the library
//! ([`arena_inspect::run`]); this binary passes it the process's arguments and exits with
//! the status it returns. Run `arena-inspect --help`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = arena_inspect::run(std::env::args_os());
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
