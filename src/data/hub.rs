//! Files from the Hugging Face hub (the `hf-hub` crate), kept in the standard Hugging
//! Face cache. Honours `HF_HOME` (cache location), `HF_ENDPOINT` (the server) and
//! `HF_HUB_OFFLINE` (cache only); offline without a cached copy is a clear error.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

/// The dataset repository that holds SST-2.
pub(crate) const GLUE_REPO: &str = "nyu-mll/glue";

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

pub(crate) fn endpoint() -> String {
    std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into())
}

/// One file of a hub repository: from the cache, else downloaded into it.
pub(crate) fn fetch(repo: &str, kind: RepoType, file: &str, what_to_do: &str) -> Result<PathBuf> {
    let repo_ref = Repo::new(repo.to_string(), kind);
    let cache = Cache::from_env();
    if let Some(path) = cache.repo(repo_ref.clone()).get(file) {
        return Ok(path);
    }
    if offline() {
        bail!(
            "HF_HUB_OFFLINE is set and {repo}/{file} is not in the Hugging Face cache ({}); {what_to_do}",
            cache.path().display()
        );
    }
    let api = ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| anyhow!("cannot set up the Hugging Face hub client: {e}"))?;
    api.repo(repo_ref).get(file).map_err(|e| {
        anyhow!(
            "cannot download {file} of {repo} from {} ({e}); {what_to_do}",
            endpoint()
        )
    })
}

/// SST-2's train (and validation) parquet files from `nyu-mll/glue`; returns the
/// directory that holds `sst2/`.
pub(crate) fn fetch_sst2(with_validation: bool) -> Result<PathBuf> {
    let help = "without network access, put the GLUE files (train.tsv, dev.tsv) or the Hugging Face files \
                (sst2/train-00000-of-00001.parquet, sst2/validation-00000-of-00001.parquet) in a folder and \
                pass --sst2 FOLDER, or in the dashboard set `sst2 = \"FOLDER\"` under [finetune] in config.toml";
    let train = fetch(
        GLUE_REPO,
        RepoType::Dataset,
        "sst2/train-00000-of-00001.parquet",
        help,
    )?;
    if with_validation {
        fetch(
            GLUE_REPO,
            RepoType::Dataset,
            "sst2/validation-00000-of-00001.parquet",
            help,
        )?;
    }
    train
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.to_path_buf())
        .ok_or_else(|| anyhow!("unexpected cache path {}", train.display()))
}

/// A GPT-2 model (`gpt2`, `distilgpt2`, or any `owner/name`) as a directory holding
/// `files` (a model folder's: its config, tokenizer and weights).
pub(crate) fn fetch_gpt2(name: &str, files: &[&str]) -> Result<PathBuf> {
    let repo = match name {
        "gpt2" => "openai-community/gpt2",
        "distilgpt2" => "distilbert/distilgpt2",
        other => other,
    };
    let help = format!(
        "without network access, download {} of the model elsewhere and pass --init FOLDER",
        files.join(", ")
    );
    let mut dir = None;
    for file in files {
        let path = fetch(repo, RepoType::Model, file, &help)?;
        dir = path.parent().map(|p| p.to_path_buf());
    }
    dir.ok_or_else(|| anyhow!("no files fetched for {repo}"))
}

/// A file of a dataset at `revision` from the hub cache, if it is there.
pub(crate) fn cached(repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
    let repo_ref = Repo::with_revision(repo.to_string(), RepoType::Dataset, revision.to_string());
    Cache::from_env().repo(repo_ref).get(file)
}

/// The URL of a dataset file at `revision` (what a browser or `curl` would fetch).
pub(crate) fn file_url(repo: &str, revision: &str, file: &str) -> String {
    format!(
        "{}/datasets/{repo}/resolve/{}/{file}",
        endpoint().trim_end_matches('/'),
        revision.replace('/', "%2F")
    )
}

/// What the hub records for one file of a revision: its size and, for a file kept in
/// LFS (every large file), its sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub size: u64,
    pub sha256: Option<String>,
}

#[derive(serde::Deserialize)]
struct Info {
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(serde::Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    lfs: Option<Lfs>,
}

#[derive(serde::Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

fn api() -> Result<hf_hub::api::sync::Api> {
    let cache = Cache::from_env();
    // The usual token: HF_TOKEN, else the one `huggingface-cli login` saved.
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| cache.token());
    ApiBuilder::from_env()
        .with_token(token)
        .with_progress(false)
        .with_retries(3)
        .build()
        .map_err(|e| anyhow!("cannot set up the Hugging Face hub client: {e}"))
}

/// A dataset file at `revision`, downloaded into the hub cache (resuming a download an
/// interruption left behind) and checked against the hub's record of its size and
/// sha256; a file that does not match is deleted and refused. `progress` hears
/// `download` and `verify` in bytes. Offline or refused, the error names the URL, the
/// file and `manual`, where a user may put the file by hand.
pub(crate) fn fetch_checked(
    repo: &str,
    revision: &str,
    file: &str,
    manual: Option<PathBuf>,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<PathBuf> {
    if let Some(path) = cached(repo, revision, file) {
        // A file gptdash has checked is used as it is. Otherwise (a download killed while
        // it was checked, or one another tool made) an LFS file is checked against its
        // sha256, which names its blob, offline too; a bad one is deleted and fetched again.
        if is_verified(&path) {
            return Ok(path);
        }
        let lfs = own_blob(repo, &path).and_then(|b| {
            let name = b.file_name()?.to_str()?.to_string();
            is_sha256(&name).then_some((b, name))
        });
        match lfs {
            Some((blob, sha)) => {
                let record = Record {
                    size: std::fs::metadata(&blob)?.len(),
                    sha256: Some(sha),
                };
                match check(&path, &record, progress)? {
                    None => {
                        mark_verified(&path);
                        return Ok(path);
                    }
                    Some(_) => remove_download(repo, &path),
                }
            }
            None if own_blob_or_plain(repo, &path) => return Ok(path),
            None => bail!(
                "the Hugging Face cache entry {} leads outside the cache (to {}); gptdash does not use it: remove that link and run again",
                path.display(),
                std::fs::canonicalize(&path).unwrap_or_default().display()
            ),
        }
    }
    let url = file_url(repo, revision, file);
    let by_hand = match &manual {
        Some(p) => format!("or download it yourself and put it at {}", p.display()),
        None => "or download it yourself".into(),
    };
    if offline() {
        bail!(
            "HF_HUB_OFFLINE is set and {file} of {repo} is not in the Hugging Face cache ({}); unset it to download {url}, {by_hand}",
            Cache::from_env().path().display()
        );
    }
    let api = api()?;
    let repo_ref = Repo::with_revision(repo.to_string(), RepoType::Dataset, revision.to_string());
    let handle = api.repo(repo_ref.clone());
    let record = (|| -> Result<Record> {
        let body = handle
            .info_request()
            .query("blobs", "true")
            .call()
            .map_err(|e| anyhow!("{e}"))?
            .into_string()?;
        let info: Info = serde_json::from_str(&body).context("the hub's answer")?;
        let sib = info
            .siblings
            .into_iter()
            .find(|s| s.rfilename == file)
            .ok_or_else(|| anyhow!("the hub lists no {file} in {repo} at {revision}"))?;
        Ok(match sib.lfs {
            Some(lfs) => Record {
                size: lfs.size,
                sha256: Some(lfs.sha256.to_ascii_lowercase()),
            },
            None => Record {
                size: sib
                    .size
                    .ok_or_else(|| anyhow!("the hub records no size for {file}"))?,
                sha256: None,
            },
        })
    })()
    .map_err(|e| {
        anyhow!(
            "cannot download {url} ({e:#}); check the network (HF_ENDPOINT={}), {by_hand}",
            endpoint()
        )
    })?;
    let path = handle
        .download_with_progress(file, Bytes::new(progress, "download"))
        .map_err(|e| anyhow!("cannot download {url} ({e}); run again to resume, {by_hand}"))?;
    match check(&path, &record, progress)? {
        None => {
            mark_verified(&path);
            Ok(path)
        }
        Some(why) => {
            // The download this call made goes (only a blob of this repository's cache
            // folder, never a file a link leads elsewhere to), so the next try starts afresh.
            remove_download(repo, &path);
            bail!("refused {url}: {why}; the download was deleted, run again to fetch it afresh, {by_hand}")
        }
    }
}

/// The folder of `repo`'s files in the Hugging Face cache.
fn repo_cache(repo: &str) -> PathBuf {
    Cache::from_env()
        .path()
        .join(format!("datasets--{}", repo.replace('/', "--")))
}

/// The blob a snapshot path leads to, when it is one of `repo`'s blobs in the cache.
fn own_blob(repo: &str, pointer: &Path) -> Option<PathBuf> {
    let blob = std::fs::canonicalize(pointer).ok()?;
    let blobs = std::fs::canonicalize(repo_cache(repo).join("blobs")).ok()?;
    (blob.parent() == Some(blobs.as_path())).then_some(blob)
}

/// A cached file gptdash may use unchecked: one of the repository's blobs not named by
/// a sha256 (a small file kept in git, not LFS), or a plain file in the snapshot (the
/// cache's layout where links are not possible) — never a link leading elsewhere.
fn own_blob_or_plain(repo: &str, pointer: &Path) -> bool {
    own_blob(repo, pointer).is_some()
        || std::fs::symlink_metadata(pointer).is_ok_and(|m| m.file_type().is_file())
}

fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Deletes a refused download: the blob (when it is this repository's) and the link to it.
fn remove_download(repo: &str, pointer: &Path) {
    if let Some(blob) = own_blob(repo, pointer) {
        let _ = std::fs::remove_file(&blob);
        if std::fs::symlink_metadata(pointer).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(pointer);
        }
    }
}

/// Where gptdash records a file it has checked (by its real path).
fn verified_marker(path: &Path) -> Option<PathBuf> {
    use sha2::Digest;
    let real = std::fs::canonicalize(path).ok()?;
    let key: String = sha2::Sha256::digest(real.as_os_str().as_encoded_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    crate::paths::cache_dir().map(|d| d.join("corpora").join("verified").join(key))
}

/// A file's size, inode and modification time, as the marker records them.
fn stamp(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{} {} {} {}",
        m.len(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

fn is_verified(path: &Path) -> bool {
    match (verified_marker(path), stamp(path)) {
        (Some(marker), Some(now)) => std::fs::read_to_string(marker).is_ok_and(|s| s == now),
        _ => false,
    }
}

fn mark_verified(path: &Path) {
    if let (Some(marker), Some(now)) = (verified_marker(path), stamp(path)) {
        if let Some(dir) = marker.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(marker, now);
    }
}

/// Checks a file against the hub's record: its size, then its sha256.
/// `Some(why)` when it does not match; an error (unreadable, or Ctrl-C) says nothing
/// about the file, which is then kept.
pub(crate) fn check(
    path: &Path,
    record: &Record,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Option<String>> {
    use sha2::Digest;
    use std::io::Read;
    let size = std::fs::metadata(path)?.len();
    if size != record.size {
        return Ok(Some(format!(
            "it is {size} bytes, the hub records {}",
            record.size
        )));
    }
    let Some(expected) = &record.sha256 else {
        return Ok(None);
    };
    let mut file = std::fs::File::open(path)?;
    let mut hash = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = Bytes::new(progress, "verify");
    hf_hub::api::Progress::init(&mut bytes, size as usize, "");
    loop {
        crate::interrupt::check()?;
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        hf_hub::api::Progress::update(&mut bytes, n);
    }
    let got: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if &got != expected {
        return Ok(Some(format!(
            "its sha256 is {got}, the hub records {expected}"
        )));
    }
    Ok(None)
}

/// Byte counts for a progress callback, at most every 1% or quarter second.
struct Bytes<'a> {
    progress: &'a mut dyn FnMut(&str, u64, u64),
    stage: &'static str,
    total: u64,
    done: u64,
    told: u64,
    at: std::time::Instant,
}

impl<'a> Bytes<'a> {
    fn new(progress: &'a mut dyn FnMut(&str, u64, u64), stage: &'static str) -> Self {
        Self {
            progress,
            stage,
            total: 0,
            done: 0,
            told: 0,
            at: std::time::Instant::now(),
        }
    }
}

impl hf_hub::api::Progress for Bytes<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        self.done = 0;
        (self.progress)(self.stage, 0, self.total);
    }

    fn update(&mut self, size: usize) {
        self.done += size as u64;
        let step = (self.total / 100).max(1);
        if self.done - self.told >= step || self.at.elapsed().as_millis() >= 250 {
            self.told = self.done;
            self.at = std::time::Instant::now();
            (self.progress)(self.stage, self.done, self.total);
        }
    }

    fn finish(&mut self) {
        (self.progress)(self.stage, self.done, self.total);
    }
}
