//! The model's dropout: on the CPU a mask hashed from one seeded draw, filled in
//! parallel; elsewhere libtorch's.
use tch::{Kind, Tensor};

/// Inverted dropout: zeroes each element with probability `p` and scales the rest by
/// 1/(1−p) when training. On the CPU the mask is made here: a counter-based hash of the
/// element index, keyed by one draw from libtorch's generator (so `tch::manual_seed`
/// still fixes every mask), filled by as many threads as libtorch uses. libtorch's CPU
/// `bernoulli_` fills masks on one thread and took a fifth of a small model's
/// forward-and-backward time. Elsewhere libtorch's own dropout.
pub(crate) fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    if x.device() != tch::Device::Cpu {
        return x.dropout(p, true);
    }
    let key =
        Tensor::randint(i64::MAX, [1], (Kind::Int64, tch::Device::Cpu)).int64_value(&[0]) as u64;
    let mask = Tensor::empty(x.size(), (Kind::Float, tch::Device::Cpu));
    let n = mask.numel();
    // SAFETY: `mask` was just allocated here: a contiguous f32 CPU tensor of `n`
    // elements that nothing else references until this function returns it.
    let values = unsafe { std::slice::from_raw_parts_mut(mask.data_ptr() as *mut f32, n) };
    fill_dropout_mask(values, key, p);
    let mask = if x.kind() == Kind::Float {
        mask
    } else {
        mask.to_kind(x.kind())
    };
    x * mask
}

/// Writes 0 (probability `p`) or 1/(1−p) into each element, from a hash of (`key`, index).
pub(super) fn fill_dropout_mask(values: &mut [f32], key: u64, p: f64) {
    // An element is dropped when the top 32 bits of its hash fall below this.
    let threshold = (p * 4_294_967_296.0) as u64;
    let keep = (1.0 / (1.0 - p)) as f32;
    let chunk = crate::device::pass_part_len(values.len());
    crate::device::split_work(
        values.chunks_mut(chunk).enumerate().collect(),
        |(c, part)| {
            let base = (c * chunk) as u64;
            for (i, v) in part.iter_mut().enumerate() {
                let h = crate::rng::mix(key, base + i as u64);
                *v = if (h >> 32) < threshold { 0.0 } else { keep };
            }
        },
    );
}
