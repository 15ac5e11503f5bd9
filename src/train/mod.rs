//! Training: the language-model step function and the optimizer.
pub mod finetune;
pub mod lm;
pub mod memory;
pub mod optim;
pub mod plan;
pub mod schedule;
pub mod step;
