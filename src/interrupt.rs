//! Signals for the headless commands. SIGINT (Ctrl-C), SIGTERM, SIGHUP and SIGQUIT ask
//! the command to stop at its next safe point — after a training step (which then
//! saves a resumable checkpoint), a generated token, a fine-tuning batch (which keeps the
//! best epoch so far) — and exit with 128 + the signal's number (130 for Ctrl-C, 143 for
//! SIGTERM, 129 for SIGHUP, 131 for SIGQUIT). A second signal ends the process at once
//! with the same code. The dashboard handles signals itself (`tui`).
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Result;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

/// The signals a command stops on.
pub const SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

struct Flags {
    any: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Installs the handlers (once per process).
pub fn install() -> Result<()> {
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
    let _ = FLAGS.set(flags);
    Ok(())
}

/// The signal received, if one was (and the handlers are installed).
pub fn requested() -> Option<i32> {
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
pub fn name(signal: i32) -> &'static str {
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

/// `Err(Interrupted)` when a signal arrived: for a command's safe points.
pub fn check() -> Result<()> {
    match requested() {
        Some(signal) => Err(Interrupted(signal).into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_names() {
        assert_eq!(Interrupted(SIGINT).exit_code(), 130);
        assert_eq!(Interrupted(SIGTERM).exit_code(), 143);
        assert_eq!(Interrupted(SIGHUP).exit_code(), 129);
        assert_eq!(Interrupted(SIGQUIT).exit_code(), 131);
        assert_eq!(Interrupted(SIGTERM).to_string(), "stopped by SIGTERM");
    }
}
