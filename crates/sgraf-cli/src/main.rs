//! `sgraf-cli`: a thin command line over the sgraf crates. This file only
//! sets up the process and dispatches: the flags of every command are in
//! `flags.rs`, each command in `commands/NAME.rs`, progress bars and
//! printing in `ui.rs`.
#![allow(
    unsafe_code,
    reason = "glibc's mallopt, called once at start-up before any thread"
)]

mod commands;
mod flags;
mod ui;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use flags::Command;

/// Runs the command; an error is printed as `fn main() -> Result` prints
/// it, followed by what to do about it on the command line, if anything.
fn main() -> ExitCode {
    setup_process();
    match run(flags::Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            if let Some(hint) = ui::hint(&e) {
                eprintln!("\nhint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Score(a) => commands::score::run(&a),
        Command::Eval(a) => commands::eval::run(&a),
        Command::Rank(a) => commands::rank::run(&a),
        Command::Index(a) => commands::index::run(&a),
        Command::Extract(a) => commands::extract::run(&a),
        Command::Prepare(a) => commands::prepare::run(&a),
        Command::Vocab(a) => commands::vocab::run(&a),
        Command::Train(a) => commands::train::run(&a),
        Command::Plot(a) => commands::plot::run(&a),
        Command::Explain(a) => commands::explain::run(&a),
        Command::Serve(a) => commands::serve::run(&a),
        Command::Info(a) => commands::info::run(&a),
    }
}

/// Settings of the whole process, which only a binary may make, first thing.
fn setup_process() {
    // Die quietly when a pipe closes (`sgraf-cli rank ... | head`), like other Unix tools.
    #[cfg(unix)]
    // SAFETY: restoring the default action of a signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_large_allocations_in_heap();
}

/// Keeps large allocations in the heap (glibc): scoring allocates and frees
/// block-sized tensors of hundreds of MB, and mapping fresh pages for each
/// one costs as much in page faults as the arithmetic.
fn keep_large_allocations_in_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 30);
    }
}
