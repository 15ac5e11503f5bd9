//! Runs you can come back to: every training and fine-tuning run writes its events to
//! `events.jsonl` in its folder as it goes ([`History`]); [`RunHistory`] reads one back
//! (curves, how it ended), [`find()`] lists the runs under the runs roots,
//! [`RunSummary`] is one line of the list, and [`diff()`] names the settings in which
//! runs differ.
mod diff;
mod find;
pub mod follow;
mod history;
mod read;
mod summary;

pub use diff::{diff, flatten, DiffRow};
pub use find::{find, resolve, roots, Found};
pub use follow::{RunsMsg, Subscription};
pub use history::{keep, History};
pub use read::{Point, RunHistory, Status};
pub use summary::{count, sort, RunSummary, SortKey};
