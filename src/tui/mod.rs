//! The dashboard: terminal set-up, the event loop and the views.
pub mod app;
pub(crate) mod input;
pub mod keys;
pub mod tabs;
pub mod terminal;
pub mod theme;
pub mod view;
pub(crate) mod widgets;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_channel::{select, Receiver};
use crossterm::event::Event as TermEvent;

use crate::config::Settings;
use crate::watch::Source;
use app::{App, Msg};

/// Runs the dashboard until the user quits; with `watch`, its Train tab follows that
/// stream of events (`gptdash watch`) instead of the worker's runs.
pub fn run(settings: Settings, watch: Option<Source>) -> Result<()> {
    // Keys come from stdin, or from /dev/tty when stdin is the watched stream.
    let keyboard = std::io::stdin().is_terminal()
        || (watch == Some(Source::Stdin)
            && std::fs::File::open("/dev/tty").is_ok_and(|t| t.is_terminal()));
    if !std::io::stdout().is_terminal() || !keyboard {
        bail!(
            "the dashboard needs a terminal (stdout or stdin is not one); for scripts use the headless \
             commands: gptdash train | generate | bench (each with --json)"
        );
    }
    let fps = settings.ui.fps.max(1);
    let worker = crate::worker::spawn_with(
        crate::output::DEFAULT_PARENT.into(),
        settings.train.device.clone(),
    )
    .context("cannot start the worker thread")?;
    // Bounded: a stream faster than the UI waits in its source, not in memory.
    let (stream_tx, stream) = crossbeam_channel::bounded(4096);
    let (never, mut stream_open) = (crossbeam_channel::never(), true);
    let _reader = match &watch {
        Some(source) => Some(
            crate::watch::spawn(source.clone(), stream_tx)
                .context("cannot start the stream reader")?,
        ),
        None => None,
    };
    // The Runs tab's files are read on a thread of their own.
    let (subscribe, subscriptions) = crossbeam_channel::unbounded();
    let (runs_tx, runs_rx) = crossbeam_channel::bounded(64);
    let _runs_reader = crate::runs::follow::spawn(subscriptions, runs_tx)
        .context("cannot start the runs reader")?;
    let mut subscribed = crate::runs::Subscription::default();
    let mut terminal = terminal::Terminal::enter().context("cannot set up the terminal")?;
    let input = spawn_input_reader();
    let signals = spawn_signal_reader()?;
    // The signal that ended the dashboard, if one did.
    let mut stopped_by: Option<i32> = None;
    let mut app = match &watch {
        Some(source) => App::watching(settings, source),
        None => {
            let mut app = App::new(settings);
            app.log("welcome: space starts training on the configured corpus; ? lists every key");
            app
        }
    };
    let frame_time = Duration::from_secs_f64(1.0 / fps as f64);
    let mut dirty = true;
    let mut last_draw = Instant::now() - frame_time;
    let result = (|| -> Result<()> {
        loop {
            if dirty && last_draw.elapsed() >= frame_time {
                terminal.draw(|frame| view::draw(frame, &app))?;
                last_draw = Instant::now();
                dirty = false;
            }
            // Wait for something to happen; when a redraw is due, only until the next frame.
            let timeout = if dirty {
                frame_time.saturating_sub(last_draw.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            let msg = select! {
                recv(worker.events) -> e => match e {
                    Ok(e) => Some(Msg::Worker(e)),
                    Err(_) => bail!("the worker thread ended unexpectedly"),
                },
                recv(signals) -> s => {
                    // SIGTERM, SIGHUP, SIGINT, SIGQUIT: keep the run (a training run saves a
                    // resumable checkpoint, fine-tuning keeps its best epoch), then quit.
                    if let Ok(signal) = s {
                        stopped_by = Some(signal);
                        for command in app.stop_and_quit() {
                            let _ = worker.commands.send(command);
                        }
                    }
                    None
                },
                recv(if stream_open { &stream } else { &never }) -> m => match m {
                    Ok(m) => Some(Msg::Stream(m)),
                    Err(_) => {
                        stream_open = false; // its reader ended (standard input closed)
                        None
                    }
                },
                recv(runs_rx) -> m => m.ok().map(Msg::Runs),
                recv(input) -> e => match e {
                    Ok(TermEvent::Key(k)) => Some(Msg::Key(k)),
                    Ok(TermEvent::Resize(..)) => { dirty = true; last_draw = Instant::now() - frame_time; None }
                    Ok(_) => None,
                    Err(_) => bail!("lost the terminal input"),
                },
                default(timeout) => None,
            };
            if let Some(msg) = msg {
                for command in app.update(msg) {
                    let _ = worker.commands.send(command);
                }
                // Coalesce a burst of worker events and stream lines into one frame.
                while let Ok(e) = worker.events.try_recv() {
                    for command in app.update(Msg::Worker(e)) {
                        let _ = worker.commands.send(command);
                    }
                }
                while let Ok(m) = stream.try_recv() {
                    for command in app.update(Msg::Stream(m)) {
                        let _ = worker.commands.send(command);
                    }
                }
                dirty = true;
                let wanted = app.runs_subscription();
                if wanted != subscribed {
                    let _ = subscribe.send(wanted.clone());
                    subscribed = wanted;
                }
            }
            if app.quit {
                return Ok(());
            }
        }
    })();
    // After a hang-up the terminal may be gone: restoring it is tried, never fatal then.
    let left = terminal.leave();
    // Work without stopping points of its own (preparing a corpus) stops at the next
    // one, so quitting takes a moment, not the rest of the preparation.
    crate::interrupt::cancel();
    worker.shutdown();
    if let Some(signal) = stopped_by {
        return Err(crate::interrupt::Interrupted(signal).into());
    }
    left?;
    result
}

/// The signals that end the dashboard, forwarded to a channel from their own thread.
fn spawn_signal_reader() -> Result<Receiver<i32>> {
    let mut signals = signal_hook::iterator::Signals::new(crate::interrupt::SIGNALS)
        .context("cannot install the signal handlers")?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("gptdash-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if tx.send(signal).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(rx)
}

/// Terminal input on its own thread (crossterm's read blocks), forwarded to a channel.
fn spawn_input_reader() -> Receiver<TermEvent> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let _ = std::thread::Builder::new()
        .name("gptdash-input".into())
        .spawn(move || {
            while let Ok(event) = crossterm::event::read() {
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
    rx
}
