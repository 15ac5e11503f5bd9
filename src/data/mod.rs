//! Text in, token batches out: corpora and sentence splitting, the tokenizer.
pub mod catalog;
pub mod corpus;
pub(crate) mod files;
pub mod hub;
pub mod normalize;
pub(crate) mod prepare;
pub mod source;
pub mod sst2;
pub mod stream;
pub mod tokenizer;
pub(crate) mod tokens;
