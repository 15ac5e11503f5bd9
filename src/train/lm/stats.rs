//! What a training run keeps about itself besides the model: the numbers its summary
//! reports, and the GPU monitor of a CUDA run.
use std::collections::VecDeque;
use std::time::Instant;

use tch::Device;

use crate::protocol::{GpuStatus, StepMetrics};

/// The GPU monitor of a CUDA run: when it last read, and the memory in use then.
pub(super) struct GpuWatch {
    monitor: crate::gpu::GpuMonitor,
    last: Option<Instant>,
    pub(super) mib: Option<f64>,
}

impl GpuWatch {
    /// A reading of a CUDA run's device, at most one a second (`None` in between and on
    /// the CPU); `slot` keeps the monitor between calls.
    pub(super) fn read(slot: &mut Option<GpuWatch>, device: Device) -> Option<GpuStatus> {
        let Device::Cuda(index) = device else {
            return None;
        };
        let watch = slot.get_or_insert_with(|| GpuWatch {
            monitor: crate::gpu::GpuMonitor::open(index),
            last: None,
            mib: None,
        });
        if watch.last.is_some_and(|t| t.elapsed().as_secs_f64() < 1.0) {
            return None;
        }
        watch.last = Some(Instant::now());
        let status = watch.monitor.read();
        watch.mib = status.reading.as_ref().map(|r| r.memory_used_mib);
        Some(status)
    }
}

/// What the run's summary needs: recent losses, tokens and time.
pub(super) struct RunStats {
    /// When the run was set up (corpus, tokenizer and model included).
    pub(super) created: Instant,
    /// The last 20 training losses.
    pub(super) recent: VecDeque<f64>,
    pub(super) last_test_loss: Option<f64>,
    pub(super) tokens: usize,
    /// Seconds inside training steps only, and inside `advance` as a whole.
    pub(super) step_secs: f64,
    pub(super) busy_secs: f64,
}

impl RunStats {
    const RECENT: usize = 20;

    pub(super) fn new(created: Instant) -> Self {
        Self {
            created,
            recent: VecDeque::with_capacity(Self::RECENT),
            last_test_loss: None,
            tokens: 0,
            step_secs: 0.0,
            busy_secs: 0.0,
        }
    }

    pub(super) fn record(&mut self, m: &StepMetrics) {
        if self.recent.len() == Self::RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(m.loss);
        self.tokens += m.tokens;
        self.step_secs += m.iter_ms / 1e3;
    }
}
