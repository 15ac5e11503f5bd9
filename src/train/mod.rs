//! Training: the language-model step function and the optimizer.
pub mod lm;
pub mod optim;
