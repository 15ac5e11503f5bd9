//! gptdash: train, probe and fine-tune small GPT language models from a terminal.
//!
//! Everything is in the library so tests and benches can use it; `main.rs` only parses
//! arguments and dispatches.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
pub(crate) mod anatomy;
pub mod budget;
pub mod checkpoint;
pub mod classifier;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod generate;
pub(crate) mod gpu;
pub(crate) mod inspect;
pub mod interrupt;
pub mod model;
pub mod output;
pub(crate) mod paths;
pub mod protocol;
pub(crate) mod reading;
pub mod rng;
pub mod runs;
pub mod sweep;
pub mod train;
pub mod tui;
pub mod watch;
pub mod worker;

/// libtorch's random generator is global to the process: tests that build models or
/// check exact reproducibility take this lock so they never interleave.
#[cfg(test)]
pub(crate) fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SEEDED.lock().unwrap_or_else(|e| e.into_inner())
}
