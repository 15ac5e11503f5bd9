//! `gptdash bench wait`: how much CPU OpenMP's worker threads burn between parallel
//! regions — what another run on the same cores loses. A loop of short parallel passes
//! with a serial gap after each (as a training step's small ops leave), timed by wall
//! clock and by the process's CPU time: with threads that spin while they wait, the CPU
//! time approaches threads × wall; with the passive policy gptdash sets, it stays near
//! the work done. The wait policy in force is reported beside.
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use tch::{Device, Kind, Tensor};

use crate::protocol::{BenchReport, Event, WaitBench};

#[derive(Debug, Clone, Args)]
pub struct WaitBenchArgs {
    /// libtorch CPU threads (at least 2: one thread never waits for another).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(2..=1024))]
    pub threads: u64,
    /// Parallel passes, each followed by the serial gap.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
    /// The serial gap after each pass, in microseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub gap_us: u64,
    #[arg(long)]
    pub json: bool,
}

/// This process's CPU time (user + system), in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

pub(super) fn bench_wait(a: &WaitBenchArgs) -> Result<()> {
    tch::set_num_threads(a.threads as i32);
    // Large enough that libtorch splits it over every thread (its grain is 32k elements).
    let mut x = Tensor::zeros([1 << 20], (Kind::Float, Device::Cpu));
    let gap = Duration::from_micros(a.gap_us);
    let mut pass = |rounds: u64| {
        for _ in 0..rounds {
            let _ = x.f_add_scalar_(1.0);
            // The serial gap: this thread busy, the workers waiting.
            let until = Instant::now() + gap;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
    };
    pass(20);
    let (wall0, cpu0) = (Instant::now(), cpu_seconds());
    pass(a.rounds);
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let report = WaitBench {
        wait_policy: crate::budget::wait_policy_in_force(),
        threads: a.threads as usize,
        rounds: a.rounds,
        gap_us: a.gap_us,
        wall_s: wall,
        cpu_s: cpu,
        cpu_per_wall: cpu / wall.max(1e-9),
    };
    if a.json {
        println!(
            "{}",
            Event::Bench(Box::new(BenchReport::Wait(report))).to_json()
        );
    } else {
        println!(
            "wait policy {}: {} threads, {} passes with {} µs serial gaps: {:.2} s wall, {:.2} s CPU ({:.2} CPU per wall second; spinning workers bring it towards {})",
            report.wait_policy, report.threads, report.rounds, report.gap_us, report.wall_s, report.cpu_s, report.cpu_per_wall, report.threads
        );
    }
    Ok(())
}
