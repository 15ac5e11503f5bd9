//! What the Runs tab's chart draws, computed when the selection, a history or an option
//! changes (never per frame): each selected run's curve on the chosen x axis, smoothed,
//! cut into as many buckets as a wide chart has columns — the raw curve as each
//! bucket's low and high (drawn faint under the smoothed line), the smoothed one as each
//! bucket's mean — and runs that differ only by their seed as one mean line with a ± one
//! standard deviation band.
use std::collections::BTreeMap;
use std::path::Path;

use crate::runs::{Point, RunHistory};

/// Buckets across the x range: more than a 200-column chart has braille dots.
pub(crate) const BUCKETS: usize = 256;

/// What the x axis counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XAxis {
    #[default]
    Step,
    Tokens,
    Time,
}

impl XAxis {
    pub(crate) fn next(self) -> Self {
        match self {
            XAxis::Step => XAxis::Tokens,
            XAxis::Tokens => XAxis::Time,
            XAxis::Time => XAxis::Step,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            XAxis::Step => "step",
            XAxis::Tokens => "tokens",
            XAxis::Time => "training time (s)",
        }
    }

    fn of(self, p: &Point) -> f64 {
        match self {
            XAxis::Step => p.step as f64,
            XAxis::Tokens => p.tokens,
            XAxis::Time => p.secs,
        }
    }
}

/// How curves are smoothed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Smoothing {
    None,
    /// Exponential moving average with this weight on the past.
    #[default]
    Ema,
    /// Mean of the last this many points.
    Window,
}

/// The EMA's weight on the past, and the moving window's length.
pub(crate) const EMA: f64 = 0.9;
pub(crate) const WINDOW: usize = 25;

impl Smoothing {
    pub(crate) fn next(self) -> Self {
        match self {
            Smoothing::None => Smoothing::Ema,
            Smoothing::Ema => Smoothing::Window,
            Smoothing::Window => Smoothing::None,
        }
    }

    pub(crate) fn name(self) -> String {
        match self {
            Smoothing::None => "raw".into(),
            Smoothing::Ema => format!("EMA {EMA}"),
            Smoothing::Window => format!("mean of {WINDOW}"),
        }
    }

    fn apply(self, ys: &[f64]) -> Vec<f64> {
        match self {
            Smoothing::None => ys.to_vec(),
            Smoothing::Ema => {
                // Bias-corrected, as TensorBoard's: the first points are not pulled to 0.
                let (mut avg, mut weight) = (0.0, 0.0);
                ys.iter()
                    .map(|y| {
                        avg = EMA * avg + (1.0 - EMA) * y;
                        weight = EMA * weight + (1.0 - EMA);
                        avg / weight
                    })
                    .collect()
            }
            Smoothing::Window => {
                let mut sum = 0.0;
                ys.iter()
                    .enumerate()
                    .map(|(i, y)| {
                        sum += y;
                        if i >= WINDOW {
                            sum -= ys[i - WINDOW];
                        }
                        sum / (i + 1).min(WINDOW) as f64
                    })
                    .collect()
            }
        }
    }
}

/// Which curve of each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    #[default]
    TrainLoss,
    TestLoss,
    /// A classifier's validation accuracy.
    Accuracy,
}

impl Metric {
    pub(crate) fn next(self) -> Self {
        match self {
            Metric::TrainLoss => Metric::TestLoss,
            Metric::TestLoss => Metric::Accuracy,
            Metric::Accuracy => Metric::TrainLoss,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Metric::TrainLoss => "train loss",
            Metric::TestLoss => "test / validation loss",
            Metric::Accuracy => "validation accuracy",
        }
    }

    fn points(self, h: &RunHistory) -> &[Point] {
        match self {
            Metric::TrainLoss => &h.train,
            Metric::TestLoss => &h.test,
            Metric::Accuracy => &h.accuracy,
        }
    }
}

/// The chart's options.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChartOptions {
    pub x: XAxis,
    pub smoothing: Smoothing,
    pub metric: Metric,
    pub log_scale: bool,
    /// Runs that differ only by seed drawn as one (mean ± std).
    pub group_seeds: bool,
}

/// One line of the chart: a run, or a group of runs that differ only by seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// Index into the palette (stable per run: see [`color_index`]).
    pub color: usize,
    /// The raw curve: each bucket's low then high (empty when not smoothed: the line is
    /// the raw curve then).
    pub raw: Vec<(f64, f64)>,
    /// The line drawn.
    pub line: Vec<(f64, f64)>,
    /// A group's band: a zig-zag between mean − std and mean + std per bucket, drawn
    /// as a filled area.
    pub band: Vec<(f64, f64)>,
    /// Runs in the series.
    pub runs: usize,
}

/// Everything the chart draws.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChartData {
    pub series: Vec<Series>,
    pub x_bounds: [f64; 2],
    pub y_bounds: [f64; 2],
}

/// A run's colour: from its name's hash (so it keeps its colour whatever else is
/// selected), moved on past colours the runs before it took.
pub(crate) fn color_index(name: &str, taken: &[usize], palette: usize) -> usize {
    let hash = xxhash_rust::xxh3::xxh3_64(name.as_bytes()) as usize;
    (0..palette)
        .map(|i| (hash + i) % palette)
        .find(|c| !taken.contains(c))
        .unwrap_or(hash % palette)
}

/// One curve cut into buckets: per bucket, the raw low and high and the smoothed mean.
struct Bucketed {
    low: Vec<f64>,
    high: Vec<f64>,
    mean: Vec<f64>,
}

fn bucket(points: &[(f64, f64, f64)], lo: f64, hi: f64) -> Bucketed {
    let n = BUCKETS;
    let mut b = Bucketed {
        low: vec![f64::NAN; n],
        high: vec![f64::NAN; n],
        mean: vec![f64::NAN; n],
    };
    let mut counts = vec![0usize; n];
    let mut sums = vec![0.0; n];
    let width = (hi - lo).max(1e-12);
    for &(x, raw, smooth) in points {
        let i = (((x - lo) / width) * n as f64)
            .floor()
            .clamp(0.0, n as f64 - 1.0) as usize;
        b.low[i] = if b.low[i].is_nan() {
            raw
        } else {
            b.low[i].min(raw)
        };
        b.high[i] = if b.high[i].is_nan() {
            raw
        } else {
            b.high[i].max(raw)
        };
        sums[i] += smooth;
        counts[i] += 1;
    }
    for i in 0..n {
        if counts[i] > 0 {
            b.mean[i] = sums[i] / counts[i] as f64;
        }
    }
    b
}

/// The bucket's centre on the x axis.
fn bucket_x(i: usize, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * (i as f64 + 0.5) / BUCKETS as f64
}

/// The chart for these runs (name, history, group key: runs with the same key differ
/// only by seed), in the order given.
pub fn build(
    runs: &[(String, &RunHistory, String)],
    options: ChartOptions,
    palette: usize,
) -> ChartData {
    let scale = |y: f64| {
        if options.log_scale {
            if y > 0.0 {
                y.log10()
            } else {
                f64::NAN
            }
        } else {
            y
        }
    };
    // Each run's (x, raw, smoothed), finite values only.
    let curves: Vec<Vec<(f64, f64, f64)>> = runs
        .iter()
        .map(|(_, h, _)| {
            let points: Vec<&Point> = options
                .metric
                .points(h)
                .iter()
                .filter(|p| p.value.is_finite())
                .collect();
            let ys: Vec<f64> = points.iter().map(|p| p.value).collect();
            let smooth = options.smoothing.apply(&ys);
            points
                .iter()
                .zip(ys.iter().zip(smooth))
                .map(|(p, (y, s))| (options.x.of(p), scale(*y), scale(s)))
                .filter(|(_, y, s)| y.is_finite() && s.is_finite())
                .collect()
        })
        .collect();
    let xs = curves.iter().flatten().map(|p| p.0);
    let (x_lo, x_hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if !x_lo.is_finite() {
        return ChartData {
            x_bounds: [0.0, 1.0],
            y_bounds: [0.0, 1.0],
            ..ChartData::default()
        };
    }
    let x_lo = x_lo
        .min(0.0)
        .max(if options.x == XAxis::Step { 0.0 } else { x_lo });
    let x_hi = x_hi.max(x_lo + 1e-9);
    let bucketed: Vec<Bucketed> = curves.iter().map(|c| bucket(c, x_lo, x_hi)).collect();
    // Groups, in the order of their first run.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, (_, _, key)) in runs.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|g| options.group_seeds && g.0 == *key)
        {
            Some(g) => g.1.push(i),
            None => groups.push((key.clone(), vec![i])),
        }
    }
    let mut taken = Vec::new();
    let mut series = Vec::new();
    let smoothed = options.smoothing != Smoothing::None;
    for (_, members) in groups {
        let first = &runs[members[0]].0;
        let color = color_index(first, &taken, palette);
        taken.push(color);
        if members.len() == 1 {
            let b = &bucketed[members[0]];
            let mut raw = Vec::new();
            let mut line = Vec::new();
            for i in 0..BUCKETS {
                if b.mean[i].is_nan() {
                    continue;
                }
                let x = bucket_x(i, x_lo, x_hi);
                if smoothed {
                    raw.push((x, b.low[i]));
                    raw.push((x, b.high[i]));
                }
                line.push((x, b.mean[i]));
            }
            series.push(Series {
                label: first.clone(),
                color,
                raw,
                line,
                band: Vec::new(),
                runs: 1,
            });
            continue;
        }
        let mut line = Vec::new();
        let mut band = Vec::new();
        for i in 0..BUCKETS {
            let values: Vec<f64> = members
                .iter()
                .map(|m| bucketed[*m].mean[i])
                .filter(|v| !v.is_nan())
                .collect();
            let (Some(mean), std) = crate::sweep::mean_std(&values) else {
                continue;
            };
            let x = bucket_x(i, x_lo, x_hi);
            line.push((x, mean));
            let s = std.unwrap_or(0.0);
            // A vertical stroke per bucket, joined: a filled band.
            if band.len() % 4 == 0 {
                band.push((x, mean - s));
                band.push((x, mean + s));
            } else {
                band.push((x, mean + s));
                band.push((x, mean - s));
            }
        }
        series.push(Series {
            label: format!("{first} +{} seeds", members.len() - 1),
            color,
            raw: Vec::new(),
            line,
            band,
            runs: members.len(),
        });
    }
    let ys = series
        .iter()
        .flat_map(|s| s.raw.iter().chain(&s.line).chain(&s.band))
        .map(|p| p.1)
        .filter(|y| y.is_finite());
    let (y_lo, y_hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    let (y_lo, y_hi) = if y_lo.is_finite() {
        (y_lo, y_hi.max(y_lo + 1e-6))
    } else {
        (0.0, 1.0)
    };
    let pad = (y_hi - y_lo) * 0.05;
    ChartData {
        series,
        x_bounds: [x_lo, x_hi],
        y_bounds: [y_lo - pad, y_hi + pad],
    }
}

/// The group key of a run: its settings without the seed keys (runs with equal keys
/// differ only by seed); a run without a record is a group of its own.
pub(crate) fn group_key(dir: &Path, h: &RunHistory) -> String {
    match &h.record {
        Some(record) => {
            let mut flat: BTreeMap<String, String> = crate::runs::flatten(record);
            flat.remove("train.seed");
            flat.remove("finetune.seed");
            format!("{flat:?}")
        }
        None => dir.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(values: &[f64]) -> RunHistory {
        let mut h = RunHistory::default();
        h.train = values
            .iter()
            .enumerate()
            .map(|(i, v)| Point {
                step: i as u64 + 1,
                tokens: (i as f64 + 1.0) * 100.0,
                secs: (i as f64 + 1.0) * 0.5,
                value: *v,
            })
            .collect();
        h
    }

    #[test]
    fn smoothing_keeps_a_constant_and_follows_a_step() {
        let flat = [2.0; 50];
        for s in [Smoothing::None, Smoothing::Ema, Smoothing::Window] {
            assert!(
                s.apply(&flat).iter().all(|v| (v - 2.0).abs() < 1e-12),
                "{s:?}"
            );
        }
        let mut step = vec![0.0; 30];
        step.extend([1.0; 30]);
        let w = Smoothing::Window.apply(&step);
        assert_eq!(w[29], 0.0);
        assert!((w[30] - 1.0 / WINDOW as f64).abs() < 1e-12);
        assert!((w[59] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn seed_groups_are_one_mean_line_with_a_band_and_others_lines_of_their_own() {
        let a = history(&[3.0, 2.0, 1.0]);
        let b = history(&[5.0, 4.0, 3.0]);
        let c = history(&[1.0, 1.0, 1.0]);
        let runs = vec![
            ("a".to_string(), &a, "g".to_string()),
            ("b".to_string(), &b, "g".to_string()),
            ("c".to_string(), &c, "other".to_string()),
        ];
        let options = ChartOptions {
            smoothing: Smoothing::None,
            group_seeds: true,
            ..ChartOptions::default()
        };
        let chart = build(&runs, options, 8);
        assert_eq!(chart.series.len(), 2);
        let group = &chart.series[0];
        assert_eq!(group.runs, 2);
        assert_eq!(group.label, "a +1 seeds");
        let ys: Vec<f64> = group.line.iter().map(|p| p.1).collect();
        assert_eq!(ys, [4.0, 3.0, 2.0], "the mean of the two");
        // ± the sample std of (3, 5) = √2 around 4 at the first step.
        let first: Vec<f64> = group.band[..2].iter().map(|p| p.1).collect();
        let s = 2f64.sqrt();
        assert!((first[0] - (4.0 - s)).abs() < 1e-12 && (first[1] - (4.0 + s)).abs() < 1e-12);
        assert_ne!(chart.series[0].color, chart.series[1].color);
        // Ungrouped: three lines, the same colours for a and c as before.
        let apart = build(
            &runs,
            ChartOptions {
                group_seeds: false,
                ..options
            },
            8,
        );
        assert_eq!(apart.series.len(), 3);
        assert_eq!(apart.series[0].color, chart.series[0].color);
        // By tokens: the x axis is the tokens' range.
        let by_tokens = build(
            &runs,
            ChartOptions {
                x: XAxis::Tokens,
                ..options
            },
            8,
        );
        assert_eq!(by_tokens.x_bounds[1], 300.0);
    }

    #[test]
    fn log_scale_drops_values_it_cannot_show() {
        let h = history(&[10.0, 0.0, 1.0]);
        let runs = vec![("a".to_string(), &h, "a".to_string())];
        let options = ChartOptions {
            smoothing: Smoothing::None,
            log_scale: true,
            ..ChartOptions::default()
        };
        let chart = build(&runs, options, 8);
        let ys: Vec<f64> = chart.series[0].line.iter().map(|p| p.1).collect();
        assert_eq!(ys, [1.0, 0.0]);
    }
}
