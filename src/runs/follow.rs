//! The Runs tab's reader: a thread that lists the runs under the roots and follows the
//! histories the tab shows, so no file is read on the UI thread. The tab says what it
//! wants as a [`Subscription`] (the dashboard's loop sends it whenever it changes); the
//! thread answers with [`RunsMsg`]s: the list after each scan (every few seconds while
//! the tab is shown: a sweep's new members appear), and a followed run's history each
//! time it grew (about once a second: runs still training update live).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{find, RunHistory, RunSummary};
use crate::checkpoint::HISTORY_FILE;

/// What the Runs tab wants read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// The tab is shown (nothing is read otherwise).
    pub visible: bool,
    pub roots: Vec<PathBuf>,
    /// Bumped to ask for a scan now.
    pub scan: u64,
    /// The run folders whose histories to follow.
    pub follow: Vec<PathBuf>,
}

/// What the reader found.
#[derive(Debug, Clone, PartialEq)]
pub enum RunsMsg {
    Listed(Vec<RunSummary>),
    /// A followed run's history, whole, as it is now, and whether a process is
    /// writing the run (it is running).
    History(PathBuf, Box<RunHistory>, bool),
    /// A followed run's history cannot be read.
    Unreadable(PathBuf, String),
}

/// How often the list is scanned again while shown, and followed runs looked at.
const RESCAN: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_secs(1);

/// Starts the reader; it ends when either channel closes.
pub fn spawn(
    subscriptions: Receiver<Subscription>,
    out: Sender<RunsMsg>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("gptdash-runs".into())
        .spawn(move || follow(subscriptions, out))
}

fn follow(subscriptions: Receiver<Subscription>, out: Sender<RunsMsg>) {
    let mut sub = Subscription::default();
    let mut scanned: Option<(u64, Instant)> = None;
    let mut followed: BTreeMap<PathBuf, RunHistory> = BTreeMap::new();
    loop {
        match subscriptions.recv_timeout(POLL) {
            Ok(new) => {
                sub = new;
                // Take the newest only.
                while let Ok(newer) = subscriptions.try_recv() {
                    sub = newer;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if !sub.visible {
            continue;
        }
        let due = scanned.is_none_or(|(n, at)| n != sub.scan || at.elapsed() >= RESCAN);
        if due {
            let list: Vec<RunSummary> = find(&sub.roots)
                .iter()
                .filter_map(|f| RunSummary::read(f).ok())
                .collect();
            if out.send(RunsMsg::Listed(list)).is_err() {
                return;
            }
            scanned = Some((sub.scan, Instant::now()));
        }
        followed.retain(|dir, _| sub.follow.contains(dir));
        for dir in &sub.follow {
            let history = followed.entry(dir.clone()).or_default();
            let msg = match history.read_more(&dir.join(HISTORY_FILE), true) {
                Ok(false) => continue,
                Ok(true) => RunsMsg::History(
                    dir.clone(),
                    Box::new(history.clone()),
                    crate::checkpoint::is_being_written(dir),
                ),
                Err(e) => RunsMsg::Unreadable(dir.clone(), e.to_string()),
            };
            if out.send(msg).is_err() {
                return;
            }
        }
    }
}
