//! The model: one GPT type used for language modelling and classification.
pub mod gpt;
pub(crate) mod hf;

/// The files of a model folder, named alike in gptdash's checkpoints and Hugging Face's.
pub const CONFIG_FILE: &str = "config.json";
pub(crate) const MODEL_FILE: &str = "model.safetensors";
pub(crate) const TOKENIZER_FILE: &str = "tokenizer.json";
pub(crate) mod safetensors;
