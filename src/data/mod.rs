//! Text in, token batches out: corpora and sentence splitting, the tokenizer.
pub mod corpus;
pub mod tokenizer;
