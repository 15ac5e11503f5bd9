//! Reading the small files a user names (a tokenizer, SST-2 rows, extra training rows):
//! only regular files, and only up to a size, so a device (`/dev/zero`) or a pipe
//! nobody writes is an error at once rather than a read that never ends.
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The largest such file: 1 GB (GPT-2's tokenizer is 1.4 MB, SST-2's train split 5 MB).
pub(crate) const MAX_FILE_BYTES: u64 = 1_000_000_000;

/// Opens `path` for reading after checking it is a regular file of at most `limit`
/// bytes; `what` names it in errors (`tokenizer file`, `SST-2 file`).
pub(crate) fn open_regular(path: &Path, what: &str, limit: u64) -> Result<std::fs::File> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{what} {}: is not a regular file (a folder, a device or a pipe); give a file",
            path.display()
        );
    }
    if meta.len() > limit {
        bail!(
            "{what} {}: is {} MB, more than the {} MB such a file may be",
            path.display(),
            meta.len() / 1_000_000,
            limit / 1_000_000
        );
    }
    std::fs::File::open(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// The bytes of a regular file of at most [`MAX_FILE_BYTES`] (see [`open_regular`]).
pub(crate) fn read_regular(path: &Path, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open_regular(path, what, MAX_FILE_BYTES)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    Ok(bytes)
}

/// A new file beside `path`, `<name>.tmp-<pid>-<n>`, created exclusively (never an
/// existing file or a link planted there), to be renamed onto `path` when complete.
pub(crate) fn create_temp_beside(
    path: &Path,
) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_file_name(format!("{name}.tmp-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Opens `path` for appending, creating it: only a regular file (a pipe or a device put
/// there is an error, never a write that blocks), never through a link.
pub(crate) fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(
            "is not a regular file (a folder, a device or a pipe)",
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_pipes_folders_and_huge_files_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        for path in ["/dev/zero", "/dev/null"] {
            let msg = format!(
                "{:#}",
                read_regular(Path::new(path), "tokenizer file").unwrap_err()
            );
            assert!(
                msg.contains("not a regular file") && msg.contains(path),
                "{msg}"
            );
        }
        let msg = format!("{:#}", read_regular(dir.path(), "SST-2 file").unwrap_err());
        assert!(msg.contains("not a regular file"), "{msg}");
        let fifo = dir.path().join("pipe");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a valid, NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert!(read_regular(&fifo, "SST-2 file").is_err());
        let file = dir.path().join("f.txt");
        std::fs::write(&file, "12345").unwrap();
        assert_eq!(read_regular(&file, "x").unwrap(), b"12345");
        let msg = format!("{:#}", open_regular(&file, "x", 4).unwrap_err());
        assert!(msg.contains("more than"), "{msg}");
    }
}
