//! Training: the language-model step function and the optimizer.
pub mod finetune;
pub mod lm;
pub(crate) mod memory;
pub(crate) mod optim;
pub(crate) mod plan;
pub(crate) mod schedule;
pub(crate) mod step;
