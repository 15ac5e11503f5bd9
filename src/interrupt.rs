//! Signals for the headless commands. SIGINT (Ctrl-C), SIGTERM, SIGHUP and SIGQUIT ask
//! the command to stop at its next safe point — after a training step (which then
//! saves a resumable checkpoint), a generated token, a fine-tuning batch (which keeps the
//! best epoch so far) — and exit with 128 + the signal's number (130 for Ctrl-C, 143 for
//! SIGTERM, 129 for SIGHUP, 131 for SIGQUIT). A second signal ends the process at once
//! with the same code. [`PARENT_GONE`] (a sweep's member told its sweep died) asks the
//! same as SIGTERM however often it comes. The dashboard handles signals itself (`tui`).
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Result;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

/// The signals a command stops on.
pub(crate) const SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

/// The signal a process asks the kernel to send when its parent dies (`PR_SET_PDEATHSIG`,
/// a sweep's members): a stop, read as SIGTERM. It is not one of [`SIGNALS`] because it
/// comes once per thread of the dying parent (the kernel hands the orphan to each
/// remaining thread in turn), and a second SIGTERM would end the process unsaved.
pub(crate) const PARENT_GONE: i32 = signal_hook::consts::SIGUSR2;

struct Flags {
    any: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Installs the handlers (once per process).
pub(crate) fn install() -> Result<()> {
    if FLAGS.get().is_some() {
        return Ok(());
    }
    let flags = Flags {
        any: Arc::new(AtomicBool::new(false)),
        which: Arc::new(AtomicUsize::new(0)),
    };
    for signal in SIGNALS {
        // In registration order: a second signal exits at once; the first sets the flags.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, flags.any.clone())?;
        signal_hook::flag::register(signal, flags.any.clone())?;
        signal_hook::flag::register_usize(signal, flags.which.clone(), signal as usize)?;
    }
    signal_hook::flag::register(PARENT_GONE, flags.any.clone())?;
    signal_hook::flag::register_usize(PARENT_GONE, flags.which.clone(), SIGTERM as usize)?;
    let _ = FLAGS.set(flags);
    Ok(())
}

/// The signal received, if one was (and the handlers are installed).
pub(crate) fn requested() -> Option<i32> {
    let flags = FLAGS.get()?;
    if !flags.any.load(Ordering::SeqCst) {
        return None;
    }
    match flags.which.load(Ordering::SeqCst) {
        0 => Some(SIGINT),
        n => Some(n as i32),
    }
}

/// The name of a signal this module handles.
pub(crate) fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT (Ctrl-C)",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        SIGQUIT => "SIGQUIT",
        _ => "a signal",
    }
}

/// The error a command returns when a signal stopped it: `main` exits with
/// [`Interrupted::exit_code`] and prints only [`Interrupted`]'s line (the command has
/// said what it saved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted(pub i32);

impl Interrupted {
    pub fn exit_code(self) -> u8 {
        (128 + self.0).clamp(0, 255) as u8
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by {}", name(self.0))
    }
}

impl std::error::Error for Interrupted {}

/// Set when the dashboard quits: long work in progress (preparing a corpus) stops at
/// its next safe point, as for a signal.
static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Asks every long stage in this process to stop at its next safe point (the dashboard
/// quitting).
pub(crate) fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for (a signal, or the process quitting): for loops that
/// cannot return an error, which end early and leave [`check`] to their caller.
pub(crate) fn stop_requested() -> bool {
    requested().is_some() || CANCELLED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` when a signal arrived (or the process is quitting): for a
/// command's safe points.
pub(crate) fn check() -> Result<()> {
    match requested() {
        Some(signal) => Err(Interrupted(signal).into()),
        None if CANCELLED.load(Ordering::SeqCst) => Err(Interrupted(SIGINT).into()),
        None => Ok(()),
    }
}

/// A caught panic as an error with its message.
fn panic_error(panic: &(dyn std::any::Any + Send)) -> anyhow::Error {
    let what = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    anyhow::anyhow!("internal error: {what}")
}

/// [`interruptible`] for work that reports progress: `work` gets a callback whose
/// `(stage, done, total)` reach `progress` on this thread.
pub(crate) fn interruptible_progress<T: Send + 'static>(
    what: &str,
    work: impl FnOnce(&mut dyn FnMut(&str, u64, u64)) -> Result<T> + Send + 'static,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<T> {
    let (tx, rx) = crossbeam_channel::unbounded::<(String, u64, u64)>();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name(format!("gptdash-{what}"))
        .spawn(move || {
            let mut report = |stage: &str, done: u64, total: u64| {
                let _ = tx.send((stage.to_string(), done, total));
            };
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut report)))
                    .unwrap_or_else(|panic| Err(panic_error(panic.as_ref())));
            let _ = done_tx.send(result);
        })
        .map_err(|e| anyhow::anyhow!("cannot start a thread for {what}: {e}"))?;
    loop {
        crossbeam_channel::select! {
            recv(rx) -> msg => {
                if let Ok((stage, done, total)) = msg {
                    progress(&stage, done, total);
                }
                // A busy stream of progress must not keep Ctrl-C waiting.
                check()?;
            },
            recv(done_rx) -> result => {
                for (stage, done, total) in rx.try_iter() {
                    progress(&stage, done, total);
                }
                return result.unwrap_or_else(|_| Err(anyhow::anyhow!("{what} stopped without a result")));
            },
            default(std::time::Duration::from_millis(50)) => check()?,
        }
    }
}

/// Runs `work` on a thread of its own and waits for it, checking for a stop request
/// every 50 ms: a stage that has no safe points of its own (a blocking read, a
/// library's tokenizer training) is then left behind, to end with the process, and
/// `Err(Interrupted)` returned at once.
pub(crate) fn interruptible<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name(format!("gptdash-{what}"))
        .spawn(move || {
            // A panic is reported as an error with its message, not lost with the thread.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|panic| Err(panic_error(panic.as_ref())));
            let _ = tx.send(result);
        })
        .map_err(|e| anyhow::anyhow!("cannot start a thread for {what}: {e}"))?;
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(result) => return result,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => check()?,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("{what} ended without a result (an internal error)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interruptible_work_returns_its_result() {
        assert_eq!(interruptible("test", || Ok(41 + 1)).unwrap(), 42);
        let e = interruptible::<()>("test", || anyhow::bail!("no")).unwrap_err();
        assert_eq!(e.to_string(), "no");
        let e = interruptible::<()>("test", || panic!("boom")).unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
    }

    #[test]
    fn interruptible_progress_forwards_progress_in_order_and_the_result() {
        let mut seen = Vec::new();
        let r = interruptible_progress(
            "test",
            |p| {
                for i in 0..5 {
                    p("download", i, 4);
                }
                Ok(7)
            },
            &mut |stage, done, total| seen.push((stage.to_string(), done, total)),
        )
        .unwrap();
        assert_eq!(r, 7);
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[4], ("download".to_string(), 4, 4));
        let e = interruptible_progress::<()>("test", |_| panic!("boom"), &mut |_, _, _| {})
            .unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
    }

    #[test]
    fn exit_codes_and_names() {
        assert_eq!(Interrupted(SIGINT).exit_code(), 130);
        assert_eq!(Interrupted(SIGTERM).exit_code(), 143);
        assert_eq!(Interrupted(SIGHUP).exit_code(), 129);
        assert_eq!(Interrupted(SIGQUIT).exit_code(), 131);
        assert_eq!(Interrupted(SIGTERM).to_string(), "stopped by SIGTERM");
    }
}
