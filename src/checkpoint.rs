//! Checkpoints are directories, written atomically (a temp directory renamed into place):
//!
//! | file | what |
//! |---|---|
//! | `model.safetensors` | weights, GPT-2 style names |
//! | `config.json` | [`CheckpointConfig`]: model sizes, tokenizer facts, corpus |
//! | `tokenizer.json` | the tokenizer, loadable by any `tokenizers` implementation |
//! | `optimizer.safetensors` | AdamW moment buffers (training checkpoints only) |
//! | `train_state.json` | [`TrainState`]: step and settings, for exact resume |
//! | `classifier.json`, `curves.csv` | a fine-tuned classifier's record and curves |
//!
//! A save replaces only a folder of these files (and an export's): see [`replaceable`].
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device};

use crate::config::{DataMode, Settings};
use crate::data::normalize::TextForm;
use crate::data::tokenizer::TextTokenizer;
use crate::model::gpt::{Gpt, GptConfig};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const STATE_FILE: &str = "train_state.json";

/// A fine-tuned classifier's record (head, read-out, validation result).
pub const CLASSIFIER_FILE: &str = "classifier.json";
/// A fine-tuning run's per-epoch losses and accuracies.
pub const CURVES_FILE: &str = "curves.csv";

/// The files `gptdash export` writes beside a checkpoint's own.
pub const EXPORT_FILES: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// Every file a gptdash checkpoint (a training run's or a classifier's) may hold.
pub const CHECKPOINT_FILES: &[&str] = &[
    MODEL_FILE,
    OPTIMIZER_FILE,
    CONFIG_FILE,
    TOKENIZER_FILE,
    STATE_FILE,
    CLASSIFIER_FILE,
    CURVES_FILE,
    COMPLETE,
];

/// Whether a save may replace (or clean up) `dir`: it is missing, or holds only plain
/// files with the names gptdash writes (a checkpoint's, a classifier's, an export's).
/// A folder with anything else — a user's notes, a subfolder — is never replaced.
pub fn replaceable(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return !dir.exists();
    };
    entries.into_iter().all(|e| {
        e.is_ok_and(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            e.file_type().is_ok_and(|t| t.is_file())
                && (CHECKPOINT_FILES.contains(&name.as_str())
                    || EXPORT_FILES.contains(&name.as_str()))
        })
    })
}

/// A link made by [`crate::output::point_latest`] resolved to the run folder it names (so a run resumed
/// through `checkpoints/<name>` saves into its own folder, not over the link); any other
/// path as it is.
pub fn resolve_link(dir: &Path) -> PathBuf {
    // `checkpoints/small/` (a shell's completion) names the link itself.
    let mut dir: PathBuf = dir.components().collect();
    // A chain of links is followed to its end (a few steps: a loop stops there too).
    for _ in 0..8 {
        match std::fs::read_link(&dir) {
            Ok(target) if target.is_relative() => {
                dir = dir
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(target)
                    .components()
                    .collect()
            }
            Ok(target) => dir = target.components().collect(),
            Err(_) => break,
        }
    }
    dir
}

/// Layout version of `config.json`.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    pub format_version: u32,
    pub model: GptConfig,
    /// End-of-text token id, if the tokenizer has one.
    pub eot_id: Option<u32>,
    /// `small` or the corpus file the model was trained on.
    pub corpus: String,
    pub data_mode: DataMode,
    pub parameters: i64,
    /// How text was prepared before tokenizing (lower-cased, PTB-split); text given to
    /// the model later is prepared the same way. Older checkpoints lack it: then the
    /// training settings beside them say (see [`read_config`]).
    #[serde(default)]
    pub text_form: TextForm,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    pub settings: Settings,
    pub best_test_loss: Option<f64>,
    pub last_train_loss: Option<f64>,
}

/// Inside a checkpoint being written, the last file: its presence says every other file
/// was written and synced.
const COMPLETE: &str = ".complete";

/// A checkpoint directory's parent and the hidden siblings a save uses: `.NAME.tmp` (the
/// new copy being written), `.NAME.old` (the previous one, moved aside for the swap),
/// `.NAME.lock` (held by the process writing it).
pub struct Siblings {
    pub parent: PathBuf,
    pub tmp: PathBuf,
    pub old: PathBuf,
    pub lock: PathBuf,
}

pub fn siblings(dir: &Path) -> Result<Siblings> {
    let name = dir
        .file_name()
        .ok_or_else(|| anyhow!("checkpoint path {} has no directory name", dir.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(Siblings {
        tmp: parent.join(format!(".{name}.tmp")),
        old: parent.join(format!(".{name}.old")),
        lock: parent.join(format!(".{name}.lock")),
        parent,
    })
}

/// Flushes a file or directory to the disk.
fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot flush {} to the disk", path.display()))
}

/// Test-only fault injection: `GPTDASH_FAULT_SAVE=<point>` kills the process (SIGKILL, as
/// a power cut or the OOM killer would) at that point of a save — `written` (files
/// written, not synced), `synced` (the new copy complete), `aside` (between the two
/// renames: the previous copy moved aside, the new one not yet in place), `renamed` (the
/// new copy in place, the previous not yet removed). The fault-injection tests use it.
fn fault(point: &str) {
    if std::env::var("GPTDASH_FAULT_SAVE").is_ok_and(|p| p == point) {
        // SAFETY: kill(2) on our own pid with a valid signal number has no preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// The lock on a checkpoint directory: one process writes it at a time. Taken when a
/// run starts (so a second writer and an unwritable place fail before any training) and
/// held until the run ends; a save by a process that holds it goes ahead. Guards for one
/// folder in one process are counted: the lock is released when the last one drops.
#[derive(Debug)]
pub struct OutputLock {
    key: PathBuf,
}

/// The locks this process holds: the open lock file and how many guards share it.
fn held_locks(
) -> std::sync::MutexGuard<'static, std::collections::HashMap<PathBuf, (std::fs::File, usize)>> {
    type Held = std::sync::Mutex<std::collections::HashMap<PathBuf, (std::fs::File, usize)>>;
    static HELD: std::sync::OnceLock<Held> = std::sync::OnceLock::new();
    HELD.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl OutputLock {
    /// Locks `dir` for writing: its parent is created and must be writable, and no other
    /// process may hold it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        match Self::try_acquire(dir)? {
            Ok(lock) => Ok(lock),
            Err(pid) => bail!(
                "{} is being written by another gptdash (process {pid}); wait for it to end or choose another output directory",
                dir.display()
            ),
        }
    }

    /// [`OutputLock::acquire`], with another process holding the lock as `Ok(Err(its
    /// pid))` rather than an error.
    pub fn try_acquire(dir: &Path) -> Result<std::result::Result<Self, String>> {
        let dir = &resolve_link(dir);
        let s = siblings(dir)?;
        std::fs::create_dir_all(&s.parent)
            .with_context(|| format!("cannot create {}", s.parent.display()))?;
        if dir.is_file() {
            bail!("{} is a file, not a checkpoint directory", dir.display());
        }
        let key = lock_key(&s);
        let mut held = held_locks();
        if let Some((_, count)) = held.get_mut(&key) {
            *count += 1;
            return Ok(Ok(Self { key }));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&s.lock)
            .with_context(|| {
                format!(
                    "cannot write checkpoints to {}: {} is not writable",
                    dir.display(),
                    s.parent.display()
                )
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&s.lock).unwrap_or_default();
                return Ok(Err(pid.trim().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(anyhow!(e).context(format!("cannot lock {}", s.lock.display())))
            }
        }
        let _ = file.set_len(0);
        let _ = (&file).write_all(std::process::id().to_string().as_bytes());
        held.insert(key.clone(), (file, 1));
        Ok(Ok(Self { key }))
    }
}

impl OutputLock {
    /// Whether this process holds the lock on `dir` already.
    pub fn held_here(dir: &Path) -> bool {
        let dir = resolve_link(dir);
        siblings(&dir).is_ok_and(|s| held_locks().contains_key(&lock_key(&s)))
    }
}

/// The process-wide name of a folder's lock: its lock file, with the parent canonical.
fn lock_key(s: &Siblings) -> PathBuf {
    std::fs::canonicalize(&s.parent)
        .unwrap_or_else(|_| s.parent.clone())
        .join(s.lock.file_name().unwrap_or_default())
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let mut held = held_locks();
        if let Some((_, count)) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key); // closing the file releases the lock
            }
        }
    }
}

/// Puts a checkpoint back at `dir` when a save was interrupted between its two renames:
/// the new copy if it was complete, else the previous one. `true` when it did. Call with
/// the lock held (or when no writer can be running).
fn recover_locked(dir: &Path, s: &Siblings) -> Result<bool> {
    if dir.exists() {
        return Ok(false);
    }
    // Only a copy gptdash wrote is put back: a user's `.NAME.old` stays where it is.
    let from = if s.tmp.join(COMPLETE).is_file() && replaceable(&s.tmp) {
        &s.tmp
    } else if s.old.is_dir() && replaceable(&s.old) {
        &s.old
    } else {
        return Ok(false);
    };
    std::fs::rename(from, dir).with_context(|| {
        format!(
            "cannot restore the checkpoint {} from {}",
            dir.display(),
            from.display()
        )
    })?;
    let _ = sync(&s.parent);
    Ok(true)
}

/// Restores a checkpoint whose save was interrupted (see [`write_atomically`]) before it
/// is read: `true` when it did. Waits for a writer that holds the lock.
pub fn recover(dir: &Path) -> Result<bool> {
    let dir = &resolve_link(dir);
    if dir.exists() {
        return Ok(false);
    }
    let s = siblings(dir)?;
    if !s.tmp.join(COMPLETE).is_file() && !s.old.is_dir() {
        return Ok(false);
    }
    for _ in 0..50 {
        match OutputLock::acquire(dir) {
            Ok(_lock) => return recover_locked(dir, &s),
            Err(_) if dir.exists() => return Ok(false),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    bail!(
        "{} is being written by another process; try again when it is done",
        dir.display()
    )
}

/// Writes a checkpoint directory atomically and durably: `write` fills `.NAME.tmp`
/// beside `dir`; every file is synced, then a completion marker; the previous `dir`
/// moves aside to `.NAME.old`, the new copy takes its place, the parent is synced, the
/// previous copy is removed. Killed at any instant, the path holds the previous or the
/// new checkpoint, or (between the two renames) the next [`recover`] or save puts one
/// back. If `write` fails, `dir` is left as it was. Stale temporaries are removed; the
/// directory is locked for the save unless this process holds its lock already.
pub fn write_atomically(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    // A link gptdash made (`checkpoints/<name>`) is saved through, into its run folder.
    let dir = &resolve_link(dir);
    let s = siblings(dir)?;
    let _lock = OutputLock::acquire(dir)?;
    recover_locked(dir, &s)?;
    for stale in [&s.tmp, &s.old] {
        if stale.symlink_metadata().is_ok() {
            if !stale.is_dir() || !replaceable(stale) {
                bail!(
                    "cannot save {}: {} is in the way and holds files gptdash did not write; move it elsewhere",
                    dir.display(),
                    stale.display()
                );
            }
            std::fs::remove_dir_all(stale)
                .with_context(|| format!("cannot remove the stale {}", stale.display()))?;
        }
    }
    std::fs::create_dir(&s.tmp).with_context(|| format!("cannot create {}", s.tmp.display()))?;
    let written = write(&s.tmp).and_then(|()| {
        fault("written");
        for entry in std::fs::read_dir(&s.tmp)? {
            let path = entry?.path();
            if path.is_file() {
                sync(&path)?;
            }
        }
        let marker = s.tmp.join(COMPLETE);
        std::fs::write(&marker, b"")
            .with_context(|| format!("cannot write {}", marker.display()))?;
        sync(&marker)?;
        sync(&s.tmp)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&s.tmp);
        return Err(e.context(format!(
            "checkpoint {} was not written (the previous one is untouched)",
            dir.display()
        )));
    }
    fault("synced");
    let had_previous = dir.exists();
    if had_previous {
        // Checked again now, not only when the run started: a file put into the folder
        // since (a user's notes) is never deleted with the previous checkpoint.
        let aside = if injected("swap") {
            Err(std::io::Error::other("injected failure"))
        } else if !replaceable(dir) {
            Err(std::io::Error::other(
                "it holds files gptdash did not write, which a save never deletes",
            ))
        } else {
            std::fs::rename(dir, &s.old)
        };
        if let Err(e) = aside {
            return Err(saved_beside(dir, &s, e));
        }
        fault("aside");
    }
    if let Err(e) = std::fs::rename(&s.tmp, dir) {
        if had_previous {
            let _ = std::fs::rename(&s.old, dir);
        }
        return Err(saved_beside(dir, &s, e));
    }
    sync(&s.parent)?;
    fault("renamed");
    if had_previous {
        let _ = std::fs::remove_dir_all(&s.old);
    }
    Ok(())
}

/// Test-only: `GPTDASH_FAULT_SAVE=<point>` makes that step of a save fail (`swap`: the
/// previous checkpoint cannot be moved aside, as a mount point cannot).
fn injected(point: &str) -> bool {
    std::env::var("GPTDASH_FAULT_SAVE").is_ok_and(|p| p == point)
}

/// The swap into `dir` failed: the new checkpoint, complete in `.NAME.tmp`, is moved to
/// a visible folder beside it (`NAME-saved-N`) so the run is not lost, and the error says
/// where it is.
fn saved_beside(dir: &Path, s: &Siblings, why: std::io::Error) -> anyhow::Error {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    for n in 1..10_000 {
        let beside = s.parent.join(format!("{name}-saved-{n}"));
        if beside.symlink_metadata().is_ok() {
            continue;
        }
        if std::fs::rename(&s.tmp, &beside).is_ok() {
            let _ = std::fs::remove_file(beside.join(COMPLETE));
            let _ = sync(&s.parent);
            return anyhow!(
                "cannot replace {} ({why}); the checkpoint was saved to {} instead",
                dir.display(),
                beside.display()
            );
        }
        break;
    }
    anyhow!(
        "cannot replace {} ({why}); the complete checkpoint is in {}",
        dir.display(),
        s.tmp.display()
    )
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid gptdash file", path.display()))
}

fn require_checkpoint_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "checkpoint {} does not exist (expected a directory written by `gptdash train`)",
            dir.display()
        );
    }
    let config = dir.join(CONFIG_FILE);
    if !config.is_file() {
        bail!(
            "{} is not a gptdash checkpoint: it has no {CONFIG_FILE}",
            dir.display()
        );
    }
    Ok(())
}

pub fn read_config(dir: &Path) -> Result<CheckpointConfig> {
    require_checkpoint_dir(dir)?;
    let path = dir.join(CONFIG_FILE);
    let value: serde_json::Value = read_json(&path)?;
    let recorded_form = value.get("text_form").is_some();
    let mut config: CheckpointConfig = serde_json::from_value(value)
        .with_context(|| format!("{} is not a valid gptdash file", path.display()))?;
    // Written before the text form was recorded: the training settings saved beside
    // the weights say how the text was prepared.
    if !recorded_form {
        if let Ok(state) = read_train_state(dir) {
            config.text_form = TextForm::of(&state.settings.data);
        }
    }
    if config.format_version > FORMAT_VERSION {
        bail!(
            "checkpoint {} has format version {}, newer than this gptdash understands ({FORMAT_VERSION})",
            dir.display(),
            config.format_version
        );
    }
    check_model_config(&path, &config.model)?;
    if let Some(eot) = config
        .eot_id
        .filter(|&e| i64::from(e) >= config.model.vocab_size)
    {
        bail!(
            "{}: eot_id {eot} is outside the vocabulary of {}",
            path.display(),
            config.model.vocab_size
        );
    }
    Ok(config)
}

pub fn read_train_state(dir: &Path) -> Result<TrainState> {
    require_checkpoint_dir(dir)?;
    let path = dir.join(STATE_FILE);
    if !path.is_file() {
        bail!(
            "checkpoint {} has no {STATE_FILE}, so training cannot resume from it",
            dir.display()
        );
    }
    read_json(&path)
}

/// A model ready for inference, with its tokenizer.
pub struct LoadedModel {
    pub vs: nn::VarStore,
    pub model: Gpt,
    pub tokenizer: TextTokenizer,
    pub config: CheckpointConfig,
    /// Where it came from: a checkpoint folder, or the run that trained it.
    pub origin: String,
    /// A prompt classifier's template and label words (`Readout::Prompt`); `None` for
    /// plain models and other read-outs.
    pub prompt: Option<Prompt>,
}

/// What a prompt classifier appends to every sentence, and the words whose next-token
/// logits are its classes (negative first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    pub template: String,
    pub label_words: [String; 2],
}

impl LoadedModel {
    /// Whether the model was trained on sentences or documents framed by
    /// `<|endoftext|>` (gptdash's `sentences` and `documents` modes), so its inputs
    /// should be framed the same way.
    pub fn frames_sentences(&self) -> bool {
        self.config.data_mode.frames_text() && self.tokenizer.eot_id().is_some()
    }
}

/// A model to start from, as `[finetune] base` or `--init` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The model the dashboard holds.
    Held,
    /// A gptdash checkpoint or a Hugging Face GPT-2 folder.
    Folder(PathBuf),
    /// A Hugging Face model id (`gpt2`, `distilgpt2`, `owner/name`).
    Hub(String),
}

impl Base {
    /// `held`; a folder that exists, or anything written as a path (`./x`, `../x`, `/x`,
    /// `~/x`, `x/`: a missing one is an error when loaded, never a hub id); else a hub
    /// model id.
    pub fn parse(spec: &str) -> Base {
        let spec = spec.trim();
        if spec == crate::config::HELD_BASE {
            return Base::Held;
        }
        let path = Path::new(spec);
        let written_as_path = [".", "/", "~"].iter().any(|p| spec.starts_with(p))
            || spec.ends_with('/')
            || spec.matches('/').count() > 1;
        if path.is_dir() || written_as_path {
            Base::Folder(crate::paths::expand_home(spec))
        } else {
            Base::Hub(spec.to_string())
        }
    }

    /// How the log and the `start` event name it.
    pub fn describe(&self) -> String {
        match self {
            Base::Held => "the model held".into(),
            Base::Folder(dir) => dir.display().to_string(),
            Base::Hub(id) => format!("{id} (Hugging Face hub)"),
        }
    }

    /// The folder to load (a hub model is fetched into the Hugging Face cache first) and
    /// a short name for output folders; `None` for [`Base::Held`].
    pub fn locate(&self) -> Result<Option<(PathBuf, String)>> {
        Ok(match self {
            Base::Held => None,
            Base::Folder(dir) => {
                if !dir.is_dir() {
                    bail!("no checkpoint folder at {}", dir.display());
                }
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into());
                Some((dir.clone(), name))
            }
            Base::Hub(id) => {
                let dir = crate::data::hub::fetch_gpt2(id).with_context(|| {
                    format!(
                        "{id:?} is not a folder here, so it was taken for a Hugging Face model id"
                    )
                })?;
                Some((dir, id.replace('/', "-")))
            }
        })
    }
}

/// Loads weights and tokenizer of a checkpoint directory onto `device`: a gptdash
/// checkpoint, or a Hugging Face GPT-2 directory (`config.json`, `model.safetensors`,
/// `tokenizer.json`).
pub fn load_model(dir: &Path, device: Device) -> Result<LoadedModel> {
    load_model_with_dropout(dir, device, None)
}

/// [`load_model`] with another dropout rate (for fine-tuning); weights are unchanged.
/// The one place a model is loaded: the folder's format decides where the sizes and the
/// weights come from (`model::hf` reads GPT-2's); the rest is the same for both.
pub fn load_model_with_dropout(
    dir: &Path,
    device: Device,
    dropout: Option<f64>,
) -> Result<LoadedModel> {
    recover(dir)?;
    let gpt2 = crate::model::hf::is_hf_gpt2(dir);
    let mut config = if gpt2 {
        // A folder gptdash exported says how its text was framed; others are GPT-2's.
        let provenance = crate::model::hf::read_provenance(dir);
        CheckpointConfig {
            format_version: FORMAT_VERSION,
            model: crate::model::hf::read_config(dir, 2)?,
            eot_id: None,
            corpus: match &provenance {
                Some(p) => p.corpus.clone(),
                None => format!("GPT-2 weights from {}", dir.display()),
            },
            data_mode: provenance.as_ref().map_or(DataMode::Pack, |p| p.data_mode),
            parameters: 0,
            text_form: provenance.map(|p| p.text_form).unwrap_or_default(),
        }
    } else {
        read_config(dir)?
    };
    if let Some(d) = dropout {
        config.model.dropout = d;
    }
    let tokenizer = TextTokenizer::from_file(&dir.join(TOKENIZER_FILE)).with_context(|| {
        format!(
            "the checkpoint {} needs its {TOKENIZER_FILE}",
            dir.display()
        )
    })?;
    check_vocabulary(dir, &tokenizer, &config.model)?;
    if gpt2 {
        check_model_config(&dir.join(CONFIG_FILE), &config.model)?;
    } else if dir.join(MODEL_FILE).is_file() {
        // What the weights were saved with names the key that was changed.
        check_recorded(&dir.join(MODEL_FILE), &dir.join(CONFIG_FILE), &config.model)?;
    }
    check_size(dir, &config.model)?;
    let mut vs = nn::VarStore::new(device);
    let model = Gpt::new(&vs.root(), config.model);
    if gpt2 {
        crate::model::hf::load_weights(&vs, dir)?;
        config.eot_id = tokenizer.eot_id();
        config.parameters = crate::model::gpt::parameter_count(&vs);
    } else {
        load_weights(&mut vs, &dir.join(MODEL_FILE), Some(&config.model))?;
    }
    Ok(LoadedModel {
        vs,
        model,
        tokenizer,
        config,
        origin: dir.display().to_string(),
        prompt: None,
    })
}

/// The model's vocabulary and its tokenizer's must be the same size: a tokenizer with
/// more tokens would produce ids the model has no row for; one with fewer (another
/// model's) would silently read the text wrong.
fn check_vocabulary(dir: &Path, tokenizer: &TextTokenizer, model: &GptConfig) -> Result<()> {
    let tokens = tokenizer.vocab_size() as i64;
    if tokens > model.vocab_size {
        bail!(
            "checkpoint {}: tokenizer has {tokens} tokens but the model only {}",
            dir.display(),
            model.vocab_size
        );
    }
    if tokens < model.vocab_size {
        bail!(
            "checkpoint {}: the tokenizer has {tokens} tokens but the model {} (tokenizer.json belongs to another model)",
            dir.display(),
            model.vocab_size
        );
    }
    Ok(())
}

/// Before memory is allocated for the model: the weights file must be about as large as
/// the configuration implies (at least 2 bytes a parameter), so a `config.json` that
/// describes a much larger model fails here rather than allocating it.
fn check_size(dir: &Path, c: &GptConfig) -> Result<()> {
    let weights = dir.join(MODEL_FILE);
    let Ok(meta) = std::fs::metadata(&weights) else {
        return Ok(()); // the loader names the missing file
    };
    let (v, b, l, e) = (
        c.vocab_size as f64,
        c.block_size as f64,
        c.n_layer as f64,
        c.n_embd as f64,
    );
    let heads = if c.tie_lm_head { 1.0 } else { 2.0 };
    let parameters = heads * v * e + b * e + l * 12.0 * e * e;
    // The position table may be cropped in the file (GPT-2 folders); allow for it.
    let least = 2.0 * (parameters - b * e) * 0.9;
    if (meta.len() as f64) < least {
        bail!(
            "checkpoint {}: config.json describes a model of about {:.1}M parameters, but {} holds only {:.1} MB (the config does not describe these weights)",
            dir.display(),
            parameters / 1e6,
            weights.display(),
            meta.len() as f64 / 1e6
        );
    }
    Ok(())
}

/// A model configuration that can be built at all: sizes positive and consistent,
/// LayerNorm epsilon and dropout in range, nothing so large it could only be a typo.
pub fn check_model_config(path: &Path, c: &GptConfig) -> Result<()> {
    let bad =
        |key: &str, what: &str| -> Result<()> { bail!("{}: model.{key} {what}", path.display()) };
    for (key, value, max) in [
        ("vocab_size", c.vocab_size, 1 << 22),
        ("block_size", c.block_size, 1 << 20),
        ("n_layer", c.n_layer, 1024),
        ("n_head", c.n_head, 1024),
        ("n_embd", c.n_embd, 1 << 16),
        ("n_classes", c.n_classes, 1 << 16),
    ] {
        if value < 1 || value > max {
            bad(key, &format!("is {value}; it must be in 1..={max}"))?;
        }
    }
    if c.vocab_size < 2 {
        bad("vocab_size", "must be at least 2")?;
    }
    if c.n_embd % c.n_head != 0 {
        bad(
            "n_embd",
            &format!("{} is not divisible by n_head {}", c.n_embd, c.n_head),
        )?;
    }
    if !(c.layer_norm_eps > 0.0 && c.layer_norm_eps <= 0.1) {
        bad(
            "layer_norm_eps",
            &format!("is {}; it must be in (0, 0.1]", c.layer_norm_eps),
        )?;
    }
    if !(0.0..1.0).contains(&c.dropout) {
        bad(
            "dropout",
            &format!("is {}; it must be in [0, 1)", c.dropout),
        )?;
    }
    Ok(())
}

/// The tensors a safetensors file holds (name → shape), from its header, with the
/// header checked against the file's length.
fn safetensors_shapes(path: &Path) -> Result<std::collections::BTreeMap<String, Vec<i64>>> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata()?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .with_context(|| format!("{} is too short to be a safetensors file", path.display()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > size.saturating_sub(8) || header_len > 100 << 20 {
        bail!(
            "{} is not a valid safetensors file (header of {header_len} bytes in a file of {size})",
            path.display()
        );
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .with_context(|| format!("{} has a damaged safetensors header", path.display()))?;
    let data = size - 8 - header_len;
    let mut shapes = std::collections::BTreeMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let shape: Vec<i64> = serde_json::from_value(info["shape"].clone())
            .with_context(|| format!("{}: tensor {name} has no shape", path.display()))?;
        let end = info["data_offsets"][1].as_u64().unwrap_or(u64::MAX);
        if end > data {
            bail!(
                "{}: tensor {name} reaches past the end of the file (truncated?)",
                path.display()
            );
        }
        shapes.insert(name, shape);
    }
    Ok(shapes)
}

/// The safetensors metadata key under which gptdash records the model configuration
/// the weights were saved with.
const MODEL_METADATA: &str = "gptdash.model";

/// Saves `vs` to `path` (safetensors) with the model configuration in the file's
/// metadata, so a `config.json` edited afterwards (head count, LayerNorm epsilon — what
/// tensor shapes cannot show) is caught on load. The header is rewritten in a stream
/// after libtorch's writer (which has no metadata argument); the data is copied as is.
pub fn save_weights(vs: &nn::VarStore, path: &Path, model: &GptConfig) -> Result<()> {
    let named: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    write_safetensors(
        &named,
        path,
        &[(MODEL_METADATA, serde_json::to_string(model)?)],
    )
}

/// Writes `tensors` as a safetensors file with string `metadata` in its header (which
/// libtorch's writer cannot add): libtorch writes the data, then the header is rewritten
/// with the metadata and the data copied after it. The file name must end in
/// `.safetensors` (libtorch picks the format by the extension).
pub fn write_safetensors(
    tensors: &[(String, tch::Tensor)],
    path: &Path,
    metadata: &[(&str, String)],
) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let plain = path.with_file_name(".plain.safetensors");
    tch::Tensor::write_safetensors(tensors, &plain)
        .map_err(|e| anyhow!("cannot write weights {}: {e}", plain.display()))?;
    let mut input = std::fs::File::open(&plain)?;
    let mut len = [0u8; 8];
    input.read_exact(&mut len)?;
    if len_of(&len) > 100 << 20 {
        bail!("{} is not a safetensors file", plain.display());
    }
    let mut header = vec![0u8; len_of(&len) as usize];
    input.read_exact(&mut header)?;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .with_context(|| format!("libtorch wrote an unreadable header in {}", plain.display()))?;
    let mut recorded = match header.remove("__metadata__") {
        Some(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for (key, value) in metadata {
        recorded.insert((*key).into(), serde_json::Value::String(value.clone()));
    }
    header.insert("__metadata__".into(), serde_json::Value::Object(recorded));
    let mut bytes = serde_json::to_vec(&header)?;
    // The data that follows starts 8-byte aligned, as safetensors' own writer keeps it.
    while (bytes.len() + 8) % 8 != 0 {
        bytes.push(b' ');
    }
    let mut output = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
    );
    output.write_all(&(bytes.len() as u64).to_le_bytes())?;
    output.write_all(&bytes)?;
    input.seek(SeekFrom::Start(8 + len_of(&len)))?;
    std::io::copy(&mut input, &mut output)?;
    output.flush()?;
    drop(output);
    std::fs::remove_file(&plain)?;
    Ok(())
}

fn len_of(len: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*len)
}

/// The model configuration recorded in a weights file, if gptdash recorded one.
fn recorded_model(path: &Path) -> Result<Option<GptConfig>> {
    use std::io::Read;
    let not_valid = || format!("{} is not a valid safetensors file", path.display());
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).with_context(not_valid)?;
    let mut header = vec![0u8; len_of(&len).min(100 << 20) as usize];
    file.read_exact(&mut header).with_context(not_valid)?;
    let header: serde_json::Value = serde_json::from_slice(&header).with_context(not_valid)?;
    match header["__metadata__"][MODEL_METADATA].as_str() {
        Some(text) => Ok(Some(serde_json::from_str(text).with_context(|| {
            format!(
                "{}: the recorded model configuration is damaged",
                path.display()
            )
        })?)),
        None => Ok(None),
    }
}

/// Compares `config.json`'s model with the one the weights were saved with, field by
/// field (dropout is a training setting and may differ).
fn check_recorded(path: &Path, config: &Path, said: &GptConfig) -> Result<()> {
    let Some(saved) = recorded_model(path)? else {
        return Ok(());
    };
    // (key, what config.json says, what the weights were saved with)
    macro_rules! field {
        ($key:ident) => {
            (
                stringify!($key),
                said.$key.to_string(),
                saved.$key.to_string(),
            )
        };
    }
    let fields = [
        field!(vocab_size),
        field!(block_size),
        field!(n_layer),
        field!(n_head),
        field!(n_embd),
        field!(n_classes),
        field!(layer_norm_eps),
        field!(tie_lm_head),
    ];
    for (key, now, then) in fields {
        if now != then {
            bail!(
                "{} says model.{key} = {now}, but the weights in {} were saved with {then} (the config does not describe these weights)",
                config.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// Loads a gptdash weights file into `vs`, first checking that it holds every tensor the
/// model has, of the shape its `config.json` implies, and no tensor the model does not
/// use — so a `config.json` that disagrees with the weights is an error naming the
/// tensor, never a libtorch stack trace or silently wrong numbers.
pub fn load_weights(vs: &mut nn::VarStore, path: &Path, model: Option<&GptConfig>) -> Result<()> {
    if !path.is_file() {
        bail!("missing weights file {}", path.display());
    }
    let shapes = safetensors_shapes(path)?;
    let wanted = vs.variables();
    let config = path.with_file_name(CONFIG_FILE);
    if let Some(said) = model {
        check_recorded(path, &config, said)?;
    }
    for (name, tensor) in &wanted {
        match shapes.get(name) {
            None => bail!(
                "{} has no tensor {name}, which the model in {} needs (the config does not describe these weights)",
                path.display(),
                config.display()
            ),
            Some(shape) if *shape != tensor.size() => bail!(
                "{}: tensor {name} has shape {shape:?}, but {} implies {:?} (the config does not describe these weights)",
                path.display(),
                config.display(),
                tensor.size()
            ),
            Some(_) => {}
        }
    }
    if let Some(extra) = shapes.keys().find(|name| !wanted.contains_key(*name)) {
        bail!(
            "{}: tensor {extra} is not part of the model {} describes (the config does not describe these weights)",
            path.display(),
            config.display()
        );
    }
    vs.load(path)
        .map_err(|e| anyhow!("cannot load weights from {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_or_keeps_the_previous_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join(CONFIG_FILE), "1")?)).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap(), "1");
        // A failing write leaves the old checkpoint as it was and no temp directory behind.
        let err = write_atomically(&dir, |tmp| {
            std::fs::write(tmp.join(CONFIG_FILE), "half")?;
            bail!("disk full")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("untouched"));
        assert_eq!(std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap(), "1");
        // A successful write replaces it.
        write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join(MODEL_FILE), "2")?)).unwrap();
        assert!(!dir.join(CONFIG_FILE).exists());
        assert_eq!(std::fs::read_to_string(dir.join(MODEL_FILE)).unwrap(), "2");
        let mut leftovers: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        leftovers.sort();
        assert_eq!(
            leftovers,
            [".ckpt.lock", "ckpt"],
            "only the checkpoint (and its lock file)"
        );
        assert!(dir.join(COMPLETE).is_file());
    }

    /// The states a save killed at any instant can leave, and what the next reader finds.
    #[test]
    fn an_interrupted_save_is_recovered() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        let s = siblings(&dir).unwrap();
        let write = |path: &Path, text: &str, complete: bool| {
            std::fs::create_dir_all(path).unwrap();
            std::fs::write(path.join(CONFIG_FILE), text).unwrap();
            if complete {
                std::fs::write(path.join(COMPLETE), "").unwrap();
            }
        };
        // Between the renames: the previous copy aside, the new one complete → the new one.
        write(&s.old, "previous", true);
        write(&s.tmp, "new", true);
        assert!(recover(&dir).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap(),
            "new"
        );
        // The previous copy aside and the new one incomplete → the previous one.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&s.old).unwrap();
        write(&s.old, "previous", true);
        write(&s.tmp, "half", false);
        assert!(recover(&dir).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap(),
            "previous"
        );
        // A first save killed while writing: nothing to recover, nothing invented.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!recover(&dir).unwrap() && !dir.exists());
        // The next save removes the stale temporary and writes normally.
        write_atomically(&dir, |tmp| {
            Ok(std::fs::write(tmp.join(CONFIG_FILE), "next")?)
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap(),
            "next"
        );
        assert!(!s.tmp.exists() && !s.old.exists());
        // A complete checkpoint is left alone.
        assert!(!recover(&dir).unwrap());
    }

    #[test]
    fn a_save_never_deletes_files_it_did_not_write() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        let s = siblings(&dir).unwrap();
        write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join(CONFIG_FILE), "1")?)).unwrap();
        // A file the user put into the folder since the run started: the new checkpoint
        // goes beside it, and the error says where.
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let msg = format!(
            "{:#}",
            write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join(CONFIG_FILE), "2")?))
                .unwrap_err()
        );
        assert!(
            msg.contains("saved to") && msg.contains("ckpt-saved-1"),
            "{msg}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "mine"
        );
        let beside = root.path().join("ckpt-saved-1");
        assert_eq!(
            std::fs::read_to_string(beside.join(CONFIG_FILE)).unwrap(),
            "2"
        );
        // A user's folder where a save keeps its temporaries is neither adopted nor removed.
        std::fs::remove_file(dir.join("notes.txt")).unwrap();
        std::fs::create_dir(&s.old).unwrap();
        std::fs::write(s.old.join("thesis.tex"), "x").unwrap();
        let msg = format!(
            "{:#}",
            write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join(CONFIG_FILE), "3")?))
                .unwrap_err()
        );
        assert!(msg.contains("in the way"), "{msg}");
        assert!(s.old.join("thesis.tex").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            !recover(&dir).unwrap(),
            "a user's .ckpt.old is not put in place"
        );
        assert!(s.old.join("thesis.tex").is_file());
    }

    #[test]
    fn an_output_lock_is_reentrant_in_one_process_and_names_unwritable_places() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        let outer = OutputLock::acquire(&dir).unwrap();
        // Saves inside a run that holds the lock go ahead.
        write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join("a"), "1")?)).unwrap();
        // Guards are counted: the lock outlives an inner guard and ends with the last.
        let inner = OutputLock::acquire(&dir).unwrap();
        drop(inner);
        let lock_file = root.path().join(".out.lock");
        let probe = std::fs::File::open(&lock_file).unwrap();
        assert!(
            matches!(probe.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            "the outer guard still holds the lock"
        );
        drop(outer);
        assert!(probe.try_lock().is_ok(), "the last guard released the lock");
        drop(probe);
        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = format!("{:#}", OutputLock::acquire(&file).unwrap_err());
        assert!(err.contains("is a file"), "{err}");
        let err = format!(
            "{:#}",
            OutputLock::acquire(&file.join("below")).unwrap_err()
        );
        assert!(err.contains("cannot create"), "{err}");
    }

    #[test]
    fn missing_or_foreign_directories_are_clear_errors() {
        let root = tempfile::tempdir().unwrap();
        let msg = format!(
            "{:#}",
            read_config(&root.path().join("nope")).err().unwrap()
        );
        assert!(msg.contains("does not exist"), "{msg}");
        let msg = format!("{:#}", read_config(root.path()).err().unwrap());
        assert!(msg.contains("not a gptdash checkpoint"), "{msg}");
        std::fs::write(root.path().join(CONFIG_FILE), "{\"format_version\": 1}").unwrap();
        let msg = format!("{:#}", read_config(root.path()).err().unwrap());
        assert!(msg.contains("config.json"), "{msg}");
    }
}
