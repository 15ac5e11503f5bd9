//! Terminal set-up and restoration: raw mode and the alternate screen are restored on
//! quit, on error (the guard's `Drop`) and on a panic of the UI thread. A panic on any
//! other thread (the worker) leaves the live UI alone: the worker reports it as an event.
use std::io::{stdout, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;

use anyhow::Result;
use crossterm::terminal::{
    self, BeginSynchronizedUpdate, EndSynchronizedUpdate, EnterAlternateScreen,
    LeaveAlternateScreen,
};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Frame;

static ACTIVE: AtomicBool = AtomicBool::new(false);

pub(crate) struct Terminal {
    inner: ratatui::Terminal<CrosstermBackend<Stdout>>,
}

fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(stdout(), LeaveAlternateScreen, cursor::Show);
    }
}

fn install_panic_hook(ui_thread: ThreadId) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == ui_thread {
            restore();
            previous(info);
        } else {
            // Not the UI thread: the screen stays; record the panic where it cannot corrupt it.
            let line = format!(
                "panic on thread {:?}: {info}\n",
                std::thread::current().name()
            );
            crate::tui::terminal::log_to_file(&line);
        }
    }));
}

/// Appends a line to the dashboard's log file in the per-user data directory.
pub(crate) fn log_to_file(line: &str) {
    let Some(dir) = crate::paths::data_dir() else {
        return;
    };
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gptdash.log"))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

impl Terminal {
    pub(crate) fn enter() -> Result<Self> {
        install_panic_hook(std::thread::current().id());
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        if let Err(e) = execute!(stdout(), EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e.into());
        }
        let inner = match ratatui::Terminal::new(CrosstermBackend::new(stdout())) {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(e.into());
            }
        };
        Ok(Self { inner })
    }

    /// Draws one frame inside a synchronized update (no flicker).
    pub(crate) fn draw(&mut self, f: impl FnOnce(&mut Frame)) -> Result<()> {
        execute!(stdout(), BeginSynchronizedUpdate)?;
        let drawn = self.inner.draw(f);
        execute!(stdout(), EndSynchronizedUpdate)?;
        drawn?;
        Ok(())
    }

    pub(crate) fn leave(self) -> Result<()> {
        restore();
        Ok(())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        restore();
    }
}
