//! `gptdash`: parse arguments, load settings, run a command. Nothing else lives here.
use std::process::ExitCode;

use clap::Parser;
use gptdash::cli::{self, Cli, Command};

/// OpenMP's wait policy must be in the environment before libgomp's load-time
/// constructor reads it: `.preinit_array` runs before any library's constructors.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[link_section = ".preinit_array"]
static PASSIVE_OPENMP: PreInit = {
    extern "C" fn passive(
        _argc: std::ffi::c_int,
        argv: *const *const std::ffi::c_char,
        envp: *const *const std::ffi::c_char,
    ) {
        // SAFETY: glibc calls .preinit_array functions with the process's argv and envp,
        // single-threaded, before anything else.
        unsafe { gptdash::budget::passive_unless_set(argv, envp) }
    }
    passive
};

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type PreInit =
    extern "C" fn(std::ffi::c_int, *const *const std::ffi::c_char, *const *const std::ffi::c_char);

fn main() -> ExitCode {
    gptdash::device::keep_freed_memory();
    let args = Cli::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<gptdash::interrupt::Interrupted>() {
            // The command said what it saved; exit 128 + the signal's number.
            Some(stopped) => {
                say_err(format_args!("{stopped}"));
                ExitCode::from(stopped.exit_code())
            }
            None => {
                say_err(format_args!("error: {e:#}"));
                ExitCode::from(2)
            }
        },
    }
}

/// A line on stderr; a closed stderr (a sweep member whose sweep died) is not a panic.
fn say_err(line: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn run(args: Cli) -> anyhow::Result<()> {
    let loaded = cli::load_settings(args.config.as_ref())?;
    // Commands whose flags change settings check them once those are on (a training run
    // in its plan, data prepare after its flags); the others check them as read.
    match args.command {
        Some(Command::Train(train)) => cli::train::run(&train, loaded),
        Some(Command::Data(data)) => cli::data::run(&data, loaded),
        Some(Command::Bench(bench)) => cli::bench::run(&bench),
        Some(Command::Export(export)) => cli::export::run(&export),
        Some(Command::Generate(generate)) => cli::generate::run(&generate, loaded.checked()?),
        Some(Command::Finetune(args)) => cli::finetune::run(&args, loaded.checked()?),
        Some(Command::Classify(args)) => cli::finetune::classify(&args, loaded.checked()?),
        Some(Command::Inspect(args)) => cli::inspect::run(&args, loaded.checked()?),
        Some(Command::Runs(args)) => cli::runs::run(&args, loaded.checked()?),
        // Each member's settings are checked as the grid makes them.
        Some(Command::Sweep(args)) => cli::sweep::run(&args, loaded),
        Some(Command::Watch(args)) => {
            let settings = loaded.checked()?;
            let source = gptdash::watch::Source::parse(&args.source);
            source.check()?;
            gptdash::tui::run(settings, Some(source))
        }
        Some(Command::Tui) | None => gptdash::tui::run(loaded.checked()?, None),
    }
}
