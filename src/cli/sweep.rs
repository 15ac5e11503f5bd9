//! `gptdash sweep`: runs a grid of settings as runs of their own (`gptdash train`, or
//! `gptdash finetune --checkpoint`), `--parallel` at a time, each in `<out>/<member>`;
//! started again, it skips finished members and resumes interrupted ones. The members
//! run as child processes in process groups of their own: a Ctrl-C reaches the sweep,
//! which passes one SIGTERM to each member (each saves, as `train` does on a signal).
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::checkpoint::{HISTORY_FILE, STATE_FILE};
use crate::protocol::{Event, RunKind};
use crate::runs::{Found, RunHistory, RunSummary, Status};
use crate::sweep::{self, Axis, Manifest, Member, CONFIGS};

#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// A settings key and its values, `section.key=V1,V2,...` (repeatable: the grid is
    /// every combination). Values are read as TOML (numbers, booleans), else as text.
    #[arg(long = "set", value_name = "KEY=V1,V2", required = true)]
    pub set: Vec<String>,
    /// Runs per grid point, seeds counting up from the settings' seed (`train.seed`, or
    /// `finetune.seed` for a fine-tuning sweep).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub seeds: u64,
    /// Members run at once (they split the cores between them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub parallel: u64,
    /// The sweep's folder: new, empty, or this same sweep's to go on with it. Under
    /// checkpoints/ (or a `[runs] folders` entry) the Runs tab shows it.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Fine-tune this checkpoint (the keys are then finetune.*).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// JSON lines: a `sweep_member` event as each member ends, then `sweep_summary`.
    #[arg(long)]
    pub json: bool,
}

/// What a member needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Todo {
    Done,
    Fresh,
    /// A training run with a checkpoint: `--resume`.
    Resume,
    /// A folder of this sweep's with no checkpoint (or an unfinished fine-tuning run):
    /// started again there.
    Restart,
}

/// How a member stands in its folder.
fn todo(kind: RunKind, dir: &Path) -> Result<Todo> {
    if let Some(pid) = crate::checkpoint::folder::other_writer(dir) {
        return Err(crate::checkpoint::folder::being_written(dir, &pid));
    }
    let history = dir.join(HISTORY_FILE);
    if !dir.exists() {
        return Ok(Todo::Fresh);
    }
    let status = RunHistory::read(&history, false)
        .map(|h| h.status(false))
        .unwrap_or(Status::Interrupted);
    Ok(match status {
        Status::Finished | Status::Diverged => Todo::Done,
        _ if kind == RunKind::LanguageModel && dir.join(STATE_FILE).is_file() => Todo::Resume,
        _ => Todo::Restart,
    })
}

/// The member's command line.
fn command(args: &SweepArgs, out: &Path, m: &Member, todo: Todo) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("gptdash"));
    let mut c = Command::new(exe);
    let config = out.join(CONFIGS).join(format!("{}.toml", m.name));
    let dir = out.join(&m.name);
    c.arg("--config").arg(&config);
    match (&args.checkpoint, todo) {
        (None, Todo::Resume) => {
            c.arg("train").arg("--resume").arg(&dir);
        }
        (None, _) => {
            c.arg("train").arg("--out").arg(&dir);
        }
        (Some(checkpoint), _) => {
            c.arg("finetune")
                .arg("--checkpoint")
                .arg(checkpoint)
                .arg("--out")
                .arg(&dir);
        }
    }
    if todo == Todo::Restart {
        c.arg("--overwrite");
    }
    c.arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // A group of its own: the terminal's Ctrl-C reaches the sweep only, which
        // passes each member one SIGTERM (a second signal would end it unsaved).
        .process_group(0);
    let sweep = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec this calls only prctl and getppid, which are
    // async-signal-safe, and allocates nothing.
    unsafe {
        c.pre_exec(move || {
            // A sweep that dies without passing it a SIGTERM (killed, crashed) still
            // has its members save and end, rather than run on unseen. The signal
            // follows the thread that forks: `run` starts members from the main
            // thread, which lives as long as the sweep. Until a member installs its
            // handlers (after reading its settings: nothing to save yet), the signal
            // ends it outright.
            if libc::prctl(libc::PR_SET_PDEATHSIG, crate::interrupt::PARENT_GONE) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != sweep {
                // The sweep ended before its member started. Only a number: nothing is
                // allocated here.
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    c
}

/// The members running. Leaving early (an error) passes each one SIGTERM and waits for
/// it to save and end: a sweep never leaves a member running behind it.
struct Crew(Vec<Running>);

impl Drop for Crew {
    fn drop(&mut self) {
        for r in self.0.iter().filter(|r| !r.signalled) {
            // SAFETY: kill only sends a signal to a child this process started.
            unsafe {
                libc::kill(r.child.id() as i32, libc::SIGTERM);
            }
        }
        for r in &mut self.0 {
            let _ = r.child.wait();
        }
    }
}

struct Running {
    index: usize,
    /// It was passed SIGTERM already (a second would end it unsaved).
    signalled: bool,
    child: Child,
    since: Instant,
    stderr: std::thread::JoinHandle<Vec<String>>,
}

pub fn run(args: &SweepArgs, loaded: super::Loaded) -> Result<()> {
    crate::interrupt::install()?;
    let kind = if args.checkpoint.is_some() {
        RunKind::Classifier
    } else {
        RunKind::LanguageModel
    };
    if let Some(checkpoint) = &args.checkpoint {
        crate::checkpoint::read_config(checkpoint).context("--checkpoint")?;
    }
    let axes: Vec<Axis> = args
        .set
        .iter()
        .map(|s| Axis::parse(s))
        .collect::<Result<_>>()?;
    let members = sweep::plan(&loaded.settings, &axes, args.seeds, kind)
        .with_context(|| format!("invalid settings ({} and --set)", loaded.origin))?;
    let out = &args.out;
    let _lock = crate::checkpoint::OutputLock::acquire(out).context("--out")?;
    let manifest = Manifest {
        kind,
        axes: axes.clone(),
        seeds: args.seeds,
        seed_key: sweep::seed_key(kind).into(),
        checkpoint: args.checkpoint.clone(),
        members: members.iter().map(|m| m.name.clone()).collect(),
    };
    sweep::prepare(out, &manifest, &members)?;
    let todos: Vec<Todo> = members
        .iter()
        .map(|m| todo(kind, &out.join(&m.name)))
        .collect::<Result<_>>()?;
    let count = |t: Todo| todos.iter().filter(|x| **x == t).count();
    // A closed pipe (`gptdash sweep ... | head`) is not the sweep's end.
    let say = |text: String| {
        if !args.json {
            let _ = super::print_stdout(&format!("{text}\n"));
        }
    };
    say(format!(
        "sweep of {} runs in {}: {} finished, {} to resume, {} to run; {} at a time",
        members.len(),
        out.display(),
        count(Todo::Done),
        count(Todo::Resume) + count(Todo::Restart),
        count(Todo::Fresh),
        args.parallel
    ));
    let mut queue: std::collections::VecDeque<usize> = (0..members.len())
        .filter(|i| todos[*i] != Todo::Done)
        .collect();
    let mut crew = Crew(Vec::new());
    let mut failed: Vec<String> = Vec::new();
    let total = members.len();
    let mut stopped: Option<i32> = None;
    while !queue.is_empty() || !crew.0.is_empty() {
        if stopped.is_none() {
            if let Some(signal) = crate::interrupt::requested() {
                stopped = Some(signal);
                for r in &mut crew.0 {
                    // SAFETY: kill only sends a signal to a child this process started.
                    unsafe {
                        libc::kill(r.child.id() as i32, libc::SIGTERM);
                    }
                    r.signalled = true;
                }
                queue.clear();
            }
        }
        while stopped.is_none() && crew.0.len() < args.parallel as usize {
            let Some(index) = queue.pop_front() else {
                break;
            };
            let m = &members[index];
            let mut child = command(args, out, m, todos[index])
                .spawn()
                .with_context(|| format!("cannot start member {}", m.name))?;
            let stderr = child.stderr.take();
            let stderr = std::thread::spawn(move || {
                let mut tail = Vec::new();
                if let Some(e) = stderr {
                    for line in BufReader::new(e).lines().map_while(Result::ok) {
                        tail.push(line);
                        if tail.len() > 20 {
                            tail.remove(0);
                        }
                    }
                }
                tail
            });
            say(format!(
                "[{}/{total}] {}: {}",
                index + 1,
                m.name,
                match todos[index] {
                    Todo::Resume => "resumed",
                    Todo::Restart => "started again",
                    _ => "started",
                }
            ));
            crew.0.push(Running {
                index,
                signalled: false,
                child,
                since: Instant::now(),
                stderr,
            });
        }
        let mut i = 0;
        while i < crew.0.len() {
            match crew.0[i].child.try_wait()? {
                None => i += 1,
                Some(status) => {
                    let r = crew.0.remove(i);
                    let m = &members[r.index];
                    let tail = r.stderr.join().unwrap_or_default();
                    let summary = RunSummary::read(&Found {
                        name: m.name.clone(),
                        dir: out.join(&m.name),
                    })
                    .ok();
                    let secs = r.since.elapsed().as_secs_f64();
                    let line = match (&summary, status.success()) {
                        (Some(s), true) => format!(
                            "{}, {} {} ({:.1} s)",
                            s.status,
                            result_name(kind),
                            s.result().map_or("-".into(), |x| format!("{x:.4}")),
                            secs
                        ),
                        _ if stopped.is_some() => "stopped and saved".into(),
                        _ => {
                            failed.push(m.name.clone());
                            format!(
                                "failed ({status}): {}",
                                tail.last().map(String::as_str).unwrap_or("no message")
                            )
                        }
                    };
                    say(format!("[{}/{total}] {}: {line}", r.index + 1, m.name));
                    if args.json {
                        let _ = super::print_stdout(&format!(
                            "{}\n",
                            Event::SweepMember {
                                name: m.name.clone(),
                                exit_code: status.code(),
                                summary: summary.map(Box::new),
                            }
                            .to_json()
                        ));
                    }
                }
            }
        }
        if !crew.0.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The summary, from every member's history.
    let runs: BTreeMap<String, RunSummary> = members
        .iter()
        .filter_map(|m| {
            RunSummary::read(&Found {
                name: m.name.clone(),
                dir: out.join(&m.name),
            })
            .ok()
            .map(|s| (m.name.clone(), s))
        })
        .collect();
    let rows = sweep::summarize(&members, &runs);
    if args.json {
        let _ = super::print_stdout(&format!(
            "{}\n",
            Event::SweepSummary {
                out: out.clone(),
                metric: result_name(kind).into(),
                rows: rows.clone(),
            }
            .to_json()
        ));
    } else {
        let _ = super::print_stdout(&summary_table(kind, &rows));
    }
    if let Some(signal) = stopped {
        say("sweep interrupted; the same command goes on with it (finished members are skipped, interrupted ones resumed)".into());
        return Err(crate::interrupt::Interrupted(signal).into());
    }
    if !failed.is_empty() {
        bail!(
            "{} of {total} members failed ({}); their errors are above",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// What a member's result is.
fn result_name(kind: RunKind) -> &'static str {
    match kind {
        RunKind::LanguageModel => "best test loss",
        RunKind::Classifier => "validation accuracy",
    }
}

/// The summary as text: a row per grid point, mean ± std over its finished members.
pub fn summary_table(kind: RunKind, rows: &[sweep::PointResult]) -> String {
    let mut grid = vec![vec![
        "grid point".to_string(),
        "n".into(),
        format!("{} (mean ± std)", result_name(kind)),
        "each".into(),
    ]];
    for r in rows {
        let n = if r.unfinished > 0 {
            format!("{} (+{} unfinished)", r.results.len(), r.unfinished)
        } else {
            r.results.len().to_string()
        };
        grid.push(vec![
            if r.point.is_empty() {
                "(settings as given)".into()
            } else {
                r.point.join(" ")
            },
            n,
            match (r.mean, r.std) {
                (Some(m), Some(s)) => format!("{m:.4} ± {s:.4}"),
                (Some(m), None) => format!("{m:.4}"),
                _ => "-".into(),
            },
            r.results
                .iter()
                .map(|x| format!("{x:.4}"))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    super::aligned(&grid, |_| false)
}
