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
    // Commands with settings flags check the settings once those are on (a training run
    // in its plan); the others check them as read.
    match args.command {
        Some(Command::Train(train)) => return cli::train::run(&train, loaded),
        Some(Command::Data(data)) => return cli::data::run(&data, loaded),
        Some(Command::Bench(bench)) => return cli::bench::run(&bench),
        Some(Command::Export(export)) => return cli::export::run(&export),
        _ => {}
    }
    let settings = loaded.checked()?;
    match args.command {
        Some(Command::Generate(generate)) => cli::generate::run(&generate, settings),
        Some(Command::Finetune(args)) => cli::finetune::run(&args, settings),
        Some(Command::Classify(args)) => cli::finetune::classify(&args, settings),
        Some(Command::Inspect(args)) => cli::inspect::run(&args, settings),
        Some(Command::Watch(args)) => {
            let source = gptdash::watch::Source::parse(&args.source);
            source.check()?;
            gptdash::tui::run(settings, Some(source))
        }
        _ => gptdash::tui::run(settings, None),
    }
}
