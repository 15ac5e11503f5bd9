//! Runs that share a machine share its cores: each process that trains or fine-tunes
//! holds a *seat* — a locked file in the per-user cache (`~/.cache/gptdash/cpu/`) — and a
//! run whose `train.threads` is 0 (auto) uses its share of the physical cores: the cores
//! left by runs with a fixed thread count, split among the auto runs, at least one each.
//! A run looks again about once a second and follows when runs come and go, so two
//! runs started together use one core each on a 2-core machine instead of both
//! spinning on two (measured in the README: 0.16× of the alone speed each, before).
//!
//! A seat is the process's, not a run's: the dashboard and its worker, or a test binary
//! with many runs, count once. A process killed with its seat leaves a file whose lock
//! went with it; the next look removes it.
//!
//! Also here, the other half of sharing well: OpenMP's wait policy. libgomp reads
//! `OMP_WAIT_POLICY` in its load-time constructor, before `main`; gptdash's executable
//! starts itself again with it set to `PASSIVE` (unless the user set it) from
//! `.preinit_array`, which runs before any library's constructor
//! ([`passive_unless_set`]); `gptdash bench wait` measures that it is in force.
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The variable libgomp reads, and the value gptdash puts there when it is unset.
pub const WAIT_POLICY: &str = "OMP_WAIT_POLICY";
pub const PASSIVE: &str = "PASSIVE";

/// Starts the executable again with `OMP_WAIT_POLICY=PASSIVE` added, unless the
/// environment has the variable (then it returns, as it does if the exec fails). For the
/// executable's `.preinit_array` only: that runs before any library's constructor —
/// libgomp reads the variable in its own, and libc's resets the environment to the
/// exec's, so a `setenv` there would be lost. Exec'ing again at that point costs only
/// the dynamic loader's work (libtorch's own start-up, most of a second, has not run
/// yet). It uses no allocation and no libc state: libc is not initialised yet.
///
/// # Safety
/// `argv` and `envp` must be the process's NULL-terminated vectors, as glibc passes them
/// to `.preinit_array` functions; call before any other thread exists.
pub unsafe fn passive_unless_set(
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) {
    const NAME: &[u8] = b"OMP_WAIT_POLICY=";
    const MAX: usize = 2048;
    if argv.is_null() || envp.is_null() {
        return;
    }
    // SAFETY: the caller passes the process's NULL-terminated vectors of C strings.
    unsafe {
        let mut n = 0;
        while !(*envp.add(n)).is_null() {
            let entry = *envp.add(n) as *const u8;
            if (0..NAME.len()).all(|i| *entry.add(i) == NAME[i]) {
                return;
            }
            n += 1;
        }
        if n + 2 > MAX {
            return;
        }
        let mut env = [std::ptr::null::<libc::c_char>(); MAX];
        for (i, slot) in env.iter_mut().enumerate().take(n) {
            *slot = *envp.add(i);
        }
        env[n] = c"OMP_WAIT_POLICY=PASSIVE".as_ptr();
        if started_by_the_loader() {
            // `ld-linux.so gptdash ...`: /proc/self/exe is the loader, which would read
            // gptdash's first argument as the program to run.
            return;
        }
        libc::execve(c"/proc/self/exe".as_ptr(), argv, env.as_ptr());
    }
}

/// Whether /proc/self/exe is the dynamic loader (`ld-linux-x86-64.so.2`, `ld.so`): the
/// program was started by naming the loader. Uses no allocation.
fn started_by_the_loader() -> bool {
    let mut buf = [0u8; 4096];
    // SAFETY: readlink writes at most buf.len() bytes into buf.
    let n = unsafe {
        libc::readlink(
            c"/proc/self/exe".as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    };
    if n <= 0 {
        return true; // unknown: do not exec what cannot be named
    }
    is_loader(&buf[..n as usize])
}

/// Whether a path's file name is the dynamic loader's.
fn is_loader(path: &[u8]) -> bool {
    let name = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
    name.starts_with(b"ld-") || name.starts_with(b"ld.so")
}

/// The wait policy in force, lower-cased (`default` when unset): what libgomp read, since
/// the variable is set before it reads it and nothing changes it later.
pub fn wait_policy_in_force() -> String {
    std::env::var(WAIT_POLICY)
        .map(|v| v.to_ascii_lowercase())
        .unwrap_or_else(|_| "default".into())
}

/// Where seats are kept: `~/.cache/gptdash/cpu` (per user: another user's runs are not
/// counted).
fn seat_dir() -> Option<PathBuf> {
    crate::paths::cache_dir().map(|d| d.join("cpu"))
}

/// This process's seat, shared by every run in it.
struct Held {
    file: std::fs::File,
    path: PathBuf,
    /// Runs of this process holding it, and the threads each asked for (0 = auto).
    requests: Vec<(u64, usize)>,
}

fn held() -> std::sync::MutexGuard<'static, Option<Held>> {
    static HELD: Mutex<Option<Held>> = Mutex::new(None);
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// What this process asks for: the largest fixed count of its runs, else auto.
fn request_of(requests: &[(u64, usize)]) -> usize {
    requests.iter().map(|r| r.1).max().unwrap_or(0)
}

/// A run's place in the machine's thread budget, held while it computes.
#[derive(Debug)]
pub struct Seat {
    id: u64,
    requested: usize,
    threads: usize,
    looked: Instant,
}

impl Seat {
    /// Takes a seat for a run asking for `requested` threads (0 = its share). Never fails:
    /// where no seat can be kept (no cache folder, a read-only disk) the run counts itself
    /// alone, as gptdash did before.
    pub fn take(requested: usize) -> Seat {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut held = held();
            match held.as_mut() {
                Some(h) => h.requests.push((id, requested)),
                None => {
                    *held = open_seat(requested).map(|(file, path)| Held {
                        file,
                        path,
                        requests: vec![(id, requested)],
                    })
                }
            }
            if let Some(h) = held.as_mut() {
                write_request(h);
            }
        }
        let threads = share(requested, seat_dir().as_deref());
        Seat {
            id,
            requested,
            threads,
            looked: Instant::now(),
        }
    }

    /// The threads this run uses now.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The threads the run asked for (0: its share).
    pub fn requested(&self) -> usize {
        self.requested
    }

    /// Looks again (at most once a second) whether runs came or went: `Some(threads)`
    /// when this run's share changed (libtorch's thread count is set to it).
    pub fn rebalance(&mut self) -> Option<usize> {
        if self.requested != 0 || self.looked.elapsed() < Duration::from_secs(1) {
            return None;
        }
        self.looked = Instant::now();
        let now = share(0, seat_dir().as_deref());
        (now != self.threads).then(|| {
            self.threads = now;
            tch::set_num_threads(now as i32);
            now
        })
    }

    /// How many other processes hold seats now.
    pub fn others(&self) -> usize {
        seat_dir()
            .map(|d| live_seats(&d).len().saturating_sub(1))
            .unwrap_or(0)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut held = held();
        if let Some(h) = held.as_mut() {
            h.requests.retain(|r| r.0 != self.id);
            if h.requests.is_empty() {
                let _ = std::fs::remove_file(&h.path);
                *held = None; // closing the file releases its lock
            } else {
                write_request(h);
            }
        }
    }
}

/// Creates and locks this process's seat file: locked under a temporary name first, so
/// no other process ever sees it unlocked and takes it for a dead one's.
fn open_seat(requested: usize) -> Option<(std::fs::File, PathBuf)> {
    let dir = seat_dir()?;
    std::fs::create_dir_all(&dir).ok()?;
    let pid = std::process::id();
    let tmp = dir.join(format!(".{pid}.new"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .ok()?;
    file.try_lock().ok()?;
    let _ = std::os::unix::fs::FileExt::write_all_at(&file, &request_line(requested), 0);
    let path = dir.join(format!("{pid}.seat"));
    std::fs::rename(&tmp, &path).ok()?;
    Some((file, path))
}

/// A seat file's one line, `pid requested`, always of the same width: rewritten in place
/// by one write, a reader never sees it empty or half written.
fn request_line(requested: usize) -> Vec<u8> {
    format!("{:>10} {:>10}\n", std::process::id(), requested).into_bytes()
}

fn write_request(h: &mut Held) {
    let line = request_line(request_of(&h.requests));
    let _ = std::os::unix::fs::FileExt::write_all_at(&h.file, &line, 0);
}

/// Removes `path` if it is still the file `file` has open (a process that reuses a dead
/// one's id may have put its own seat there since it was opened). This narrows that race
/// to the instant between the comparison and the unlink, not closes it: seats only guide
/// the split of cores (a seat lost so leaves its process uncounted, and the others take
/// a larger share, until its runs end).
fn remove_if_same(path: &Path, file: &std::fs::File) {
    use std::os::unix::fs::MetadataExt;
    let same = match (file.metadata(), path.symlink_metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if same {
        let _ = std::fs::remove_file(path);
    }
}

/// The seats held by live processes (this one's included) and the threads each asked
/// for; files whose lock died with their process are removed.
fn live_seats(dir: &Path) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let own = held().as_ref().map(|h| h.path.clone());
    let mut seats = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".new") {
            // A seat whose process died before it was put in place: a minute old and
            // unlocked.
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > Duration::from_secs(60)));
            if let (true, Ok(file)) = (old, std::fs::File::open(&path)) {
                if file.try_lock_shared().is_ok() {
                    remove_if_same(&path, &file);
                }
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "seat") {
            continue;
        }
        let requested = |text: &str| {
            text.split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        if own.as_ref() == Some(&path) {
            seats.push(request_of(
                &held()
                    .as_ref()
                    .map(|h| h.requests.clone())
                    .unwrap_or_default(),
            ));
            continue;
        }
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        match file.try_lock_shared() {
            // Nobody holds it: its process is gone.
            Ok(()) => remove_if_same(&path, &file),
            Err(std::fs::TryLockError::WouldBlock) => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                seats.push(requested(&text));
            }
            Err(std::fs::TryLockError::Error(_)) => {}
        }
    }
    seats
}

/// The threads a run asking for `requested` gets: a fixed count as asked; auto, the
/// physical cores not taken by fixed runs, split among the auto runs (at least one).
fn share(requested: usize, dir: Option<&Path>) -> usize {
    if requested != 0 {
        return requested;
    }
    let seats = dir.map(live_seats).unwrap_or_default();
    split(cores(), &seats)
}

/// The cores runs split: `GPTDASH_CORES` when set (a container's share, or a test's),
/// else the physical cores.
pub fn cores() -> usize {
    std::env::var("GPTDASH_CORES")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .unwrap_or_else(crate::device::physical_cores)
}

/// `cores` split by `seats` (each a fixed count, or 0 for auto) for an auto run among
/// them (counted once at least).
fn split(cores: usize, seats: &[usize]) -> usize {
    let fixed: usize = seats.iter().sum();
    let autos = seats.iter().filter(|s| **s == 0).count().max(1);
    (cores.saturating_sub(fixed) / autos).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_of_dead_processes_go_and_live_ones_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A live process's seat: locked, its request in its fixed-width line.
        let live = std::fs::File::create(d.join("41.seat")).unwrap();
        live.try_lock().unwrap();
        std::os::unix::fs::FileExt::write_all_at(&live, b"        41          3\n", 0).unwrap();
        // A dead one's (unlocked), a dead one's that never was put in place (old), and
        // one being put in place now (new): only the last stays.
        std::fs::write(d.join("42.seat"), "42 0\n").unwrap();
        let stale = std::fs::File::create(d.join(".43.new")).unwrap();
        stale
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(120))
            .unwrap();
        std::fs::write(d.join(".44.new"), "").unwrap();
        assert_eq!(live_seats(d), [3]);
        assert!(d.join("41.seat").exists());
        assert!(!d.join("42.seat").exists());
        assert!(!d.join(".43.new").exists());
        assert!(d.join(".44.new").exists());
    }

    #[test]
    fn a_seat_put_in_place_after_it_was_found_dead_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("7.seat");
        std::fs::write(&path, "7 0\n").unwrap();
        let dead = std::fs::File::open(&path).unwrap();
        // A new process with the same id renames its seat over the dead one's.
        std::fs::write(dir.path().join(".7.new"), "7 0\n").unwrap();
        std::fs::rename(dir.path().join(".7.new"), &path).unwrap();
        remove_if_same(&path, &dead);
        assert!(path.exists());
        remove_if_same(&path, &std::fs::File::open(&path).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn the_loader_is_told_from_the_program() {
        assert!(is_loader(b"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"));
        assert!(is_loader(b"/lib/ld.so"));
        assert!(!is_loader(b"/work/target/release/gptdash"));
        assert!(!is_loader(b"/opt/old-ld/gptdash"));
    }

    #[test]
    fn cores_are_split_among_auto_runs_after_fixed_ones() {
        assert_eq!(split(8, &[]), 8);
        assert_eq!(split(8, &[0]), 8);
        assert_eq!(split(8, &[0, 0]), 4);
        assert_eq!(split(8, &[0, 0, 0]), 2);
        assert_eq!(split(8, &[0, 2]), 6);
        assert_eq!(split(2, &[0, 0, 0]), 1);
        assert_eq!(split(2, &[0, 4]), 1);
    }

    #[test]
    fn a_dead_processs_seat_is_not_counted_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        // A seat file nobody holds (its process died).
        std::fs::write(dir.path().join("999999.seat"), "999999 0\n").unwrap();
        // One that is held: locked by this test, standing for another process.
        let live = dir.path().join("4242.seat");
        std::fs::write(&live, "4242 3\n").unwrap();
        let holder = std::fs::File::open(&live).unwrap();
        holder.lock().unwrap();
        // Locks are per open file description: a second open of the same file sees the
        // first one's lock as another process would.
        assert_eq!(live_seats(dir.path()), vec![3]);
        assert!(!dir.path().join("999999.seat").exists());
        drop(holder);
        assert!(live_seats(dir.path()).is_empty());
    }
}
