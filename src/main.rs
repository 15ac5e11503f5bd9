//! `gptdash`: parse arguments, load settings, run a command. Nothing else lives here.
use std::process::ExitCode;

use clap::Parser;
use gptdash::cli::{self, Cli, Command};

fn main() -> ExitCode {
    gptdash::device::keep_freed_memory();
    let args = Cli::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<gptdash::interrupt::Interrupted>() {
            // The command said what it saved; exit 128 + the signal's number.
            Some(stopped) => {
                eprintln!("{stopped}");
                ExitCode::from(stopped.exit_code())
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
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
        Some(Command::Watch(args)) => {
            let settings = loaded.checked()?;
            let source = gptdash::watch::Source::parse(&args.source);
            source.check()?;
            gptdash::tui::run(settings, Some(source))
        }
        Some(Command::Tui) | None => gptdash::tui::run(loaded.checked()?, None),
    }
}
