//! Both learning-rate schedules, in one place: the language model's (linear warm-up,
//! then optional cosine decay to `min_lr`: nanoGPT's) and fine-tuning's
//! ([`Schedule`]: constant, or GPT-1's linear warm-up and decay).
use crate::config::Schedule;

/// Learning rate at step `it` (0-based): linear warm-up, then optional cosine decay to
/// `min_lr` at `max_iters` (nanoGPT's schedule).
pub(crate) fn learning_rate(
    it: u64,
    lr: f64,
    warmup: u64,
    decay: bool,
    min_lr: f64,
    max_iters: u64,
) -> f64 {
    if it < warmup {
        return lr * (it + 1) as f64 / (warmup + 1) as f64;
    }
    if !decay || max_iters <= warmup {
        return lr;
    }
    let ratio = ((it - warmup) as f64 / (max_iters - warmup) as f64).min(1.0);
    let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
    min_lr + coeff * (lr - min_lr)
}

impl Schedule {
    /// The rate's multiplier at `step` (from 0) of `total` steps.
    pub(crate) fn factor(self, step: usize, total: usize) -> f64 {
        match self {
            Schedule::Constant => 1.0,
            Schedule::Linear => {
                let total = total.max(1) as f64;
                let warmup = (0.06 * total).ceil();
                let s = step as f64;
                if s < warmup {
                    (s + 1.0) / warmup
                } else {
                    ((total - s) / (total - warmup).max(1.0)).clamp(0.0, 1.0)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let lr = |it| learning_rate(it, 1e-3, 10, true, 1e-4, 110);
        assert!(lr(0) < lr(5) && lr(5) < lr(9));
        assert!((lr(10) - 1e-3).abs() < 1e-12);
        assert!(lr(60) < 1e-3 && lr(60) > 1e-4);
        assert!((lr(110) - 1e-4).abs() < 1e-12);
        assert_eq!(learning_rate(50, 1e-3, 0, false, 0.0, 100), 1e-3);
    }

    #[test]
    fn the_linear_schedule_warms_up_then_falls_to_zero() {
        let total = 100;
        let f = |s| Schedule::Linear.factor(s, total);
        // 6 warm-up steps: 1/6 … 6/6.
        assert!((f(0) - 1.0 / 6.0).abs() < 1e-12);
        assert!((f(5) - 1.0).abs() < 1e-12);
        assert!((f(6) - 1.0).abs() < 1e-12);
        assert!((f(53) - 0.5).abs() < 1e-12);
        assert!(f(99) > 0.0 && f(99) < 0.02);
        assert!((1..total).all(|s| s < 6 || f(s) <= f(s - 1)));
        assert_eq!(Schedule::Constant.factor(99, total), 1.0);
    }
}
