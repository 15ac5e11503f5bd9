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
//! Four parts, each its own file:
//! - [`folder`]: the directory itself — the atomic swap, the lock, recovery after a
//!   save was killed. A save replaces only a folder of these files (and an export's): see
//!   [`replaceable`].
//! - [`schema`]: the file names and the JSON records (`config.json`, `train_state.json`)
//!   with their checks.
//! - [`weights`]: the weights file — saved and loaded through
//!   [`crate::model::safetensors`] (memory-mapped reads, one-pass writes, by the
//!   `safetensors` crate) with the model configuration recorded in its header.
//! - [`load`]: a model ready for use from a checkpoint or a Hugging Face GPT-2 folder,
//!   every recorded fact checked once.
pub(crate) mod folder;
pub(crate) mod load;
pub(crate) mod schema;
pub(crate) mod weights;

pub(crate) use folder::is_being_written;
pub use folder::{recover, replaceable, resolve_link, siblings, write_atomically, OutputLock};
pub use load::{load_model, load_model_with_dropout, Base, LoadedModel, Prompt};
pub use schema::*;
pub(crate) use weights::{load_weights, save_weights};
