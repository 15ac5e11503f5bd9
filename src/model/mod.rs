//! The model: one GPT type used for language modelling and classification.
pub mod gpt;
pub(crate) mod hf;
pub(crate) mod safetensors;
