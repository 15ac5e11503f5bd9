//! The model: one GPT type used for language modelling and classification.
pub mod gpt;
pub(crate) mod hf;
