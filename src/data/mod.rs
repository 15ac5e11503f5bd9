//! Text in, token batches out: corpora and sentence splitting, the tokenizer.
pub mod catalog;
pub mod corpus;
pub mod files;
pub mod hub;
pub mod normalize;
pub mod prepare;
pub mod source;
pub mod sst2;
pub mod stream;
pub mod tokenizer;
pub mod tokens;
