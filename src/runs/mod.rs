//! Runs you can come back to: every training and fine-tuning run writes its events to
//! `events.jsonl` in its folder as it goes ([`History`]); [`RunHistory`] reads one back
//! (curves, how it ended), [`find`] lists the runs under the runs roots, and
//! [`diff`] names the settings in which runs differ.
mod history;
mod read;

pub use history::{keep, History};
pub use read::{Point, RunHistory, Status};
