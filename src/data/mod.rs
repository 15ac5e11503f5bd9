//! Text in, token batches out: corpora and sentence splitting, the tokenizer.
pub mod corpus;
pub mod sst2;
pub mod tokenizer;
