//! The Train tab: loss chart, recent-steps sparkline, stats, progress and the log.
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Chart, Dataset, Gauge, GraphType, List, ListItem, Paragraph, Sparkline,
};
use ratatui::Frame;

use super::{PathInput, TrainTab};
use crate::tui::tabs::Shared;
use crate::tui::theme;
use crate::tui::widgets::{format_duration, line_series};

pub(crate) fn draw(frame: &mut Frame, t: &TrainTab, shared: &Shared, area: Rect) {
    let [left, right] =
        Layout::horizontal([Constraint::Min(40), Constraint::Length(38)]).areas(area);
    let [chart, spark, log] = Layout::vertical([
        Constraint::Percentage(62),
        Constraint::Length(5),
        Constraint::Min(3),
    ])
    .areas(left);
    match t.typing {
        Some(super::PathInput::Corpus) => draw_corpora(frame, t, chart),
        _ => draw_chart(frame, t, chart),
    }
    draw_sparkline(frame, t, spark);
    draw_log(frame, shared, log);
    let on_gpu = t
        .info
        .as_ref()
        .is_some_and(|i| i.device.starts_with("cuda"));
    let panel = if on_gpu { 7 } else { 0 };
    let [stats, gpu, gauge] = Layout::vertical([
        Constraint::Min(0),
        Constraint::Length(panel),
        Constraint::Length(3),
    ])
    .areas(right);
    draw_stats(frame, t, shared, stats);
    if on_gpu {
        draw_gpu(frame, t, gpu);
    }
    draw_gauge(frame, t, shared, gauge);
}

/// The named corpora while the corpus is being typed: sizes, and whether each is here.
fn draw_corpora(frame: &mut Frame, t: &TrainTab, area: Rect) {
    let size = crate::data::catalog::size_text;
    let mut lines = vec![Line::styled(
        format!(
            "{:<14}{:<11}{:>9}  {:<10}{}",
            "name", "here", "download", "mode", "what"
        ),
        theme::muted(),
    )];
    for c in &t.corpora {
        let here = match c.here {
            "not here" => Span::styled(format!("{:<11}", c.here), theme::muted()),
            _ => Span::styled(format!("{:<11}", c.here), theme::key()),
        };
        let download = if c.repo.is_empty() {
            "-".to_string()
        } else {
            size(c.download_mb)
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{:<14}", c.name), theme::title()),
            here,
            Span::raw(format!("{download:>9}  {:<10}", c.mode.name())),
            Span::styled(c.description.clone(), theme::muted()),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "type a name (one not here downloads from the Hugging Face hub when the run starts) or a file path; Enter uses it, Esc cancels",
        theme::muted(),
    ));
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" corpora ")),
        area,
    );
}

/// The GPU panel of a CUDA run: NVML's utilisation, memory, temperature and power, or
/// why there are none.
fn draw_gpu(frame: &mut Frame, t: &TrainTab, area: Rect) {
    let lines = match t.gpu.as_ref() {
        Some(crate::protocol::GpuStatus {
            reading: Some(r), ..
        }) => {
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "—".into());
            vec![
                Line::styled(r.name.clone(), theme::title()),
                stat(
                    "utilisation",
                    or_dash(r.utilization.map(|u| format!("{u}%"))),
                ),
                stat(
                    "memory",
                    format!(
                        "{:.1} / {:.1} GiB",
                        r.memory_used_mib / 1024.0,
                        r.memory_total_mib / 1024.0
                    ),
                ),
                stat(
                    "temp, power",
                    format!(
                        "{} · {}",
                        or_dash(r.temperature_c.map(|c| format!("{c} °C"))),
                        or_dash(r.power_w.map(|w| format!("{w:.0} W")))
                    ),
                ),
            ]
        }
        Some(status) => vec![Line::styled(
            format!(
                "no GPU readings: {}",
                status.unavailable.as_deref().unwrap_or("unknown")
            ),
            theme::muted(),
        )],
        None => vec![Line::styled("waiting for a reading…", theme::muted())],
    };
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: true })
            .block(Block::default().borders(Borders::ALL).title(" GPU ")),
        area,
    );
}

/// At most `target` points: the mean of equal index buckets.
pub(crate) fn downsample(points: &[(f64, f64)], target: usize) -> Vec<(f64, f64)> {
    if points.len() <= target || target == 0 {
        return points.to_vec();
    }
    let bucket = points.len().div_ceil(target);
    points
        .chunks(bucket)
        .map(|c| {
            let n = c.len() as f64;
            (
                c.iter().map(|p| p.0).sum::<f64>() / n,
                c.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect()
}

/// Exponential moving average of the y values (`alpha` = weight of the past).
pub(crate) fn smooth(points: &[(f64, f64)], alpha: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len());
    let mut ema: Option<f64> = None;
    for &(x, y) in points {
        let v = match ema {
            Some(e) => alpha * e + (1.0 - alpha) * y,
            None => y,
        };
        ema = Some(v);
        out.push((x, v));
    }
    out
}

fn draw_chart(frame: &mut Frame, t: &TrainTab, area: Rect) {
    let target = (area.width as usize).saturating_sub(10) * 2;
    let smoothed;
    let source: &[(f64, f64)] = if t.smoothing > 0.0 {
        smoothed = smooth(&t.losses.points, t.smoothing);
        &smoothed
    } else {
        &t.losses.points
    };
    let scale = |v: f64| if t.log_scale { v.max(1e-9).ln() } else { v };
    let train: Vec<(f64, f64)> = downsample(source, target.max(2))
        .into_iter()
        .map(|(x, y)| (x, scale(y)))
        .collect();
    let test: Vec<(f64, f64)> = t.test_losses.iter().map(|&(x, y)| (x, scale(y))).collect();

    let max_x = t
        .info
        .as_ref()
        .map(|i| i.max_iters as f64)
        .unwrap_or(1.0)
        .max(train.last().map(|p| p.0).unwrap_or(1.0));
    let ys = train
        .iter()
        .chain(test.iter())
        .map(|p| p.1)
        .filter(|y| y.is_finite());
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    let (lo, hi) = if lo.is_finite() {
        (lo, hi.max(lo + 1e-3))
    } else {
        (0.0, 1.0)
    };
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (
        if t.log_scale {
            lo - pad
        } else {
            (lo - pad).max(0.0)
        },
        hi + pad,
    );
    let label = |v: f64| {
        if t.log_scale {
            format!("{:.3}", v.exp())
        } else {
            format!("{v:.3}")
        }
    };

    let datasets = vec![
        line_series("train", theme::TRAIN_LOSS, &train),
        Dataset::default()
            .name("test")
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(Style::default().fg(theme::TEST_LOSS))
            .data(&test),
    ];
    let title = format!(
        " loss{}{} ",
        if t.log_scale { " (log scale)" } else { "" },
        if t.smoothing > 0.0 {
            format!(" (EMA {:.2})", t.smoothing)
        } else {
            String::new()
        }
    );
    let chart = Chart::new(datasets)
        .block(Block::default().borders(Borders::ALL).title(title))
        .x_axis(
            Axis::default()
                .bounds([0.0, max_x])
                .labels(vec![
                    Span::raw("0"),
                    Span::raw(format!("{:.0}", max_x / 2.0)),
                    Span::raw(format!("{max_x:.0}")),
                ])
                .style(theme::muted()),
        )
        .y_axis(
            Axis::default()
                .bounds([lo, hi])
                .labels(vec![
                    Span::raw(label(lo)),
                    Span::raw(label((lo + hi) / 2.0)),
                    Span::raw(label(hi)),
                ])
                .style(theme::muted()),
        );
    frame.render_widget(chart, area);
}

fn draw_sparkline(frame: &mut Frame, t: &TrainTab, area: Rect) {
    let recent = &t.recent;
    let width = area.width.saturating_sub(2) as usize;
    let shown: Vec<f64> = recent
        .iter()
        .skip(recent.len().saturating_sub(width))
        .copied()
        .collect();
    let (lo, hi) = shown
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let bars: Vec<u64> = shown
        .iter()
        .map(|&v| {
            if v.is_finite() && hi > lo {
                1 + ((v - lo) / (hi - lo) * 99.0) as u64
            } else {
                1
            }
        })
        .collect();
    let title = match (shown.first(), shown.last()) {
        (Some(_), Some(last)) => format!(
            " last {} steps: {lo:.3} … {hi:.3}, now {last:.4} ",
            shown.len()
        ),
        _ => " recent steps ".to_string(),
    };
    frame.render_widget(
        Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title(title))
            .data(&bars)
            .style(Style::default().fg(theme::TRAIN_LOSS)),
        area,
    );
}

fn draw_log(frame: &mut Frame, shared: &Shared, area: Rect) {
    let rows = area.height.saturating_sub(2) as usize;
    let items: Vec<ListItem> = shared
        .log
        .iter()
        .skip(shared.log.len().saturating_sub(rows))
        .map(|l| {
            let style = if l.starts_with("error") {
                theme::error()
            } else {
                Style::default()
            };
            ListItem::new(Line::styled(l.clone(), style))
        })
        .collect();
    frame.render_widget(
        List::new(items).block(Block::default().borders(Borders::ALL).title(" log ")),
        area,
    );
}

fn stat(name: &str, value: String) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{name:<12}"), theme::muted()),
        Span::raw(value),
    ])
}

/// A number as the stats show it, "—" when not reported (NaN).
fn shown(x: f64, f: impl Fn(f64) -> String) -> String {
    if x.is_finite() {
        f(x)
    } else {
        "—".into()
    }
}

fn draw_stats(frame: &mut Frame, t: &TrainTab, shared: &Shared, area: Rect) {
    let inner = usize::from(area.width.saturating_sub(2));
    let dash = || "—".to_string();
    let mut lines = Vec::new();
    let iter = t
        .last
        .map(|m| m.iter)
        .or(t.info.as_ref().map(|i| i.start_iter))
        .unwrap_or(0);
    let max = t.max_iters(shared);
    let step = if max > 0 {
        format!("{iter} / {max}")
    } else {
        iter.to_string()
    };
    lines.push(stat("step", step));
    lines.push(stat(
        "loss",
        t.last
            .map(|m| shown(m.loss, |x| format!("{x:.4}")))
            .unwrap_or_else(dash),
    ));
    lines.push(stat(
        "test loss",
        t.test_losses
            .last()
            .map(|p| format!("{:.4}", p.1))
            .unwrap_or_else(dash),
    ));
    lines.push(stat(
        "best test",
        t.best_test.map(|b| format!("{b:.4}")).unwrap_or_else(dash),
    ));
    lines.push(stat(
        "ETA",
        t.eta_secs().map(format_duration).unwrap_or_else(dash),
    ));
    lines.push(stat(
        "ms/step",
        t.ms_per_step
            .map(|m| format!("{m:.1}"))
            .unwrap_or_else(dash),
    ));
    lines.push(stat(
        "tokens/s",
        t.last
            .map(|m| shown(m.tokens_per_s, |x| format!("{x:.0}")))
            .unwrap_or_else(dash),
    ));
    lines.push(stat(
        "lr",
        t.last
            .map(|m| shown(m.lr, |x| format!("{x:.2e}")))
            .unwrap_or_else(dash),
    ));
    lines.push(stat(
        "grad norm",
        t.last
            .map(|m| shown(m.grad_norm, |x| format!("{x:.3}")))
            .unwrap_or_else(dash),
    ));
    lines.push(Line::from(""));
    let known = |s: &str| {
        if s.is_empty() {
            dash()
        } else {
            s.to_string()
        }
    };
    match &t.info {
        Some(i) => {
            let device = if i.device.is_empty() {
                dash()
            } else {
                super::device_line(i)
            };
            lines.push(stat("device", device));
            let params = if i.params > 0 {
                format!("{:.2}M", i.params as f64 / 1e6)
            } else {
                dash()
            };
            lines.push(stat("params", params));
            let shape = if i.model.n_layer > 0 {
                format!(
                    " ({}L {}H {}d)",
                    i.model.n_layer, i.model.n_head, i.model.n_embd
                )
            } else {
                String::new()
            };
            lines.push(stat("model", format!("{}{shape}", known(&i.preset))));
            let examples = if i.train_examples > 0 {
                format!(" ({} ex.)", i.train_examples)
            } else {
                String::new()
            };
            lines.push(stat(
                "corpus",
                format!("{}{examples}", known(&i.corpus_name)),
            ));
        }
        None if t.watch.is_some() => {
            lines.push(Line::styled("waiting for the run's start", theme::muted()))
        }
        None => lines.push(Line::styled("space starts training", theme::key())),
    }
    lines.push(Line::from(""));
    match &t.watch {
        Some(w) => {
            lines.push(Line::styled("watching", theme::title()));
            lines.push(stat("stream", w.source.clone()));
            lines.push(stat("status", w.status.to_string()));
            lines.push(stat(
                "lines",
                format!("{} events, {} other", w.events, w.ignored),
            ));
            let bad = Line::from(vec![
                Span::styled(format!("{:<12}", "malformed"), theme::muted()),
                Span::styled(
                    w.malformed.to_string(),
                    if w.malformed > 0 {
                        theme::error()
                    } else {
                        Style::default()
                    },
                ),
            ]);
            lines.push(bad);
            if let Some(last) = &w.last_malformed {
                lines.push(Line::styled(format!("  {last}"), theme::muted()));
            }
        }
        None => {
            lines.push(Line::styled("next run", theme::title()));
            match t.typing {
                Some(PathInput::Corpus) => {
                    let mut line = vec![Span::styled(format!("{:<12}", "corpus"), theme::muted())];
                    line.extend(
                        t.corpus_input
                            .spans(inner.saturating_sub(12), theme::key(), true),
                    );
                    lines.push(Line::from(line));
                }
                _ => lines.push(stat("corpus", shared.settings.data.corpus.clone())),
            }
            lines.push(stat("preset", shared.settings.model.preset.clone()));
        }
    }
    if let Some(saved) = &t.last_saved {
        lines.push(stat("saved", saved.clone()));
        if t.watch.is_some() {
            lines.push(Line::styled("  Ctrl-O loads it (any tab)", theme::muted()));
        }
    }
    if t.typing == Some(PathInput::Checkpoint) {
        lines.push(Line::from(""));
        lines.push(Line::styled("load checkpoint", theme::title()));
        lines.push(Line::from(t.checkpoint_input.spans(
            inner,
            theme::key(),
            true,
        )));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" stats ")),
        area,
    );
}

fn draw_gauge(frame: &mut Frame, t: &TrainTab, shared: &Shared, area: Rect) {
    let iter = t.last.map(|m| m.iter).unwrap_or(0);
    let max = t.max_iters(shared);
    let (ratio, label) = match (&t.info, &t.preparing) {
        (None, Some((stage, done, total))) => {
            let ratio = (*done as f64 / (*total).max(1) as f64).clamp(0.0, 1.0);
            (
                ratio,
                format!(
                    "preparing: {stage} {}",
                    super::progress_counts(stage, *done, *total)
                ),
            )
        }
        // A stream that does not say how long the run is.
        _ if max == 0 => (0.0, format!("step {iter}")),
        _ => {
            let ratio = (iter as f64 / max as f64).clamp(0.0, 1.0);
            (ratio, format!("{:.0}%", ratio * 100.0))
        }
    };
    frame.render_widget(
        Gauge::default()
            .block(Block::default().borders(Borders::ALL))
            .gauge_style(Style::default().fg(theme::ACCENT))
            .ratio(ratio)
            .label(label),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsample_keeps_at_most_target_points_and_the_mean() {
        let pts: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, 2.0)).collect();
        let d = downsample(&pts, 100);
        assert!(d.len() <= 100);
        assert!(d.iter().all(|p| (p.1 - 2.0).abs() < 1e-12));
        assert_eq!(downsample(&pts[..10], 100).len(), 10);
    }

    #[test]
    fn smoothing_is_an_ema() {
        let s = smooth(&[(0.0, 1.0), (1.0, 0.0)], 0.9);
        assert_eq!(s[0].1, 1.0);
        assert!((s[1].1 - 0.9).abs() < 1e-12);
    }
}
