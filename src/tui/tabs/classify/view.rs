//! The Classify tab: SST-2 fine-tuning live (per-epoch loss and accuracy), the
//! validation accuracy in large type, the confusion matrix, and a sentence box.
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, Gauge, GraphType, Paragraph, Wrap};
use ratatui::Frame;

use super::ClassifyTab;
use crate::checkpoint::Base;
use crate::config::{FinetuneSettings, Keep, Readout};
use crate::protocol::ReliabilityBin;
use crate::tui::input::TextInput;
use crate::tui::tabs::Shared;
use crate::tui::theme;
use crate::tui::widgets::line_series;

pub(crate) fn draw(frame: &mut Frame, c: &ClassifyTab, shared: &Shared, area: Rect) {
    let [top, bottom] = Layout::vertical([Constraint::Min(10), Constraint::Length(6)]).areas(area);
    let [charts, side] =
        Layout::horizontal([Constraint::Min(40), Constraint::Length(44)]).areas(top);
    let [loss, acc] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(charts);
    if c.epochs.is_empty() {
        draw_intro(frame, c, shared, charts);
    } else {
        draw_curves(frame, c, loss, true);
        match &c.done {
            Some(done) => {
                let [acc, reliability] =
                    Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                        .areas(acc);
                draw_curves(frame, c, acc, false);
                draw_reliability(frame, &done.reliability, done.ece, reliability);
            }
            None => draw_curves(frame, c, acc, false),
        }
    }
    draw_summary(frame, c, shared, side);
    if c.typing_base {
        draw_base_input(frame, &c.base_input, bottom);
    } else {
        draw_sentence(frame, c, bottom);
    }
}

/// The reliability diagram: each confidence bin's accuracy against the diagonal a
/// calibrated classifier follows (binary: confidence from 0.5).
fn draw_reliability(frame: &mut Frame, bins: &[ReliabilityBin], ece: f64, area: Rect) {
    let observed: Vec<(f64, f64)> = bins
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| (b.confidence, b.accuracy))
        .collect();
    let diagonal = [(0.5, 0.5), (1.0, 1.0)];
    let datasets = vec![
        line_series("calibrated", theme::MUTED, &diagonal),
        Dataset::default()
            .name("bins")
            .marker(symbols::Marker::Block)
            .graph_type(GraphType::Scatter)
            .style(Style::default().fg(theme::TEST_LOSS))
            .data(&observed),
    ];
    let chart = Chart::new(datasets)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" reliability (ECE {ece:.3}) ")),
        )
        .x_axis(
            Axis::default()
                .title("confidence")
                .bounds([0.5, 1.0])
                .labels(vec![Span::raw("0.5"), Span::raw("1")])
                .style(theme::muted()),
        )
        .y_axis(
            Axis::default()
                .title("accuracy")
                .bounds([0.0, 1.0])
                .labels(vec![Span::raw("0"), Span::raw("1")])
                .style(theme::muted()),
        );
    frame.render_widget(chart, area);
}

fn draw_base_input(frame: &mut Frame, typed: &TextInput, area: Rect) {
    let inner = usize::from(area.width.saturating_sub(2));
    frame.render_widget(
        Paragraph::new(Line::from(typed.spans(inner, Style::default(), true))).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme::key())
                .title(
                    " base: a checkpoint folder or a hub model id (Enter uses it, Esc cancels) ",
                ),
        ),
        area,
    );
}

fn draw_intro(frame: &mut Frame, c: &ClassifyTab, shared: &Shared, area: Rect) {
    let f = &shared.settings.finetune;
    let mut lines = vec![
        Line::styled("Sentiment fine-tuning on SST-2", theme::title()),
        Line::from(""),
        Line::from(
            "Turns a language model into a classifier: a head on the hidden state of each sentence's last token \
             (readout = last), on the mean over its tokens (mean), or the model's own next word after a template \
             between two label words (prompt). The first SST-2 training sentences are split, stratified, into \
             train and validation.",
        ),
        Line::from(""),
        Line::from(vec![
            Span::styled("base: ", theme::muted()),
            Span::raw(Base::parse(&f.base).describe()),
            Span::styled("  (b: model held / gpt2 / distilgpt2, B: type a folder or hub id)", theme::muted()),
        ]),
        Line::from(format!(
            "readout {}, keep {} epoch",
            readout_name(f),
            match f.keep {
                Keep::Best => "the best (lowest validation loss)",
                Keep::Last => "the last",
            }
        )),
        Line::from(format!(
            "settings ([finetune] in config.toml): data {}, {} samples, validation {:.0}%, {} epochs, lr {:.0e}, batch {}",
            f.sst2,
            f.samples,
            100.0 * f.val_fraction,
            f.epochs,
            f.learning_rate,
            f.batch_size
        )),
        Line::from(""),
        Line::from(
            "What it needs: a base (the model held: train one, or press o on the Train tab to load a checkpoint) and SST-2 \
             (\"hub\" fetches nyu-mll/glue; a path reads train.tsv or the Hugging Face parquet files).",
        ),
        Line::from(""),
        Line::styled("Press f to start.", theme::key()),
    ];
    if let Some(message) = &c.message {
        lines.push(Line::from(""));
        lines.push(Line::styled(message.clone(), theme::error()));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" Classify ")),
        area,
    );
}

fn draw_curves(frame: &mut Frame, c: &ClassifyTab, area: Rect, loss: bool) {
    let epochs = &c.epochs;
    let pick = |f: fn(&crate::protocol::EpochMetrics) -> f64| -> Vec<(f64, f64)> {
        epochs.iter().map(|m| (m.epoch as f64, f(m))).collect()
    };
    let (train, val, title) = if loss {
        (
            pick(|m| m.train_loss),
            pick(|m| m.val_loss),
            " loss per epoch ",
        )
    } else {
        (
            pick(|m| m.train_acc),
            pick(|m| m.val_acc),
            " accuracy per epoch ",
        )
    };
    let max_x = c
        .info
        .as_ref()
        .map(|i| i.epochs as f64)
        .unwrap_or(1.0)
        .max(epochs.len() as f64)
        .max(1.0);
    let values = train.iter().chain(val.iter()).map(|p| p.1);
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if loss {
        (0.0, (hi * 1.1).max(0.1))
    } else {
        ((lo - 0.05).max(0.0), (hi + 0.05).min(1.0))
    };
    let datasets = vec![
        line_series("train", theme::TRAIN_LOSS, &train),
        line_series("validation", theme::TEST_LOSS, &val),
    ];
    let chart = Chart::new(datasets)
        .block(Block::default().borders(Borders::ALL).title(title))
        .x_axis(
            Axis::default()
                .bounds([1.0, max_x])
                .labels(vec![Span::raw("1"), Span::raw(format!("{max_x:.0}"))])
                .style(theme::muted()),
        )
        .y_axis(
            Axis::default()
                .bounds([lo, hi])
                .labels(vec![
                    Span::raw(format!("{lo:.2}")),
                    Span::raw(format!("{hi:.2}")),
                ])
                .style(theme::muted()),
        );
    frame.render_widget(chart, area);
}

/// Digits three cells wide and five high, for the validation accuracy.
fn big_text(text: &str) -> Vec<String> {
    const GLYPHS: [(char, [&str; 5]); 12] = [
        ('0', ["███", "█ █", "█ █", "█ █", "███"]),
        ('1', [" █ ", "██ ", " █ ", " █ ", "███"]),
        ('2', ["███", "  █", "███", "█  ", "███"]),
        ('3', ["███", "  █", "███", "  █", "███"]),
        ('4', ["█ █", "█ █", "███", "  █", "  █"]),
        ('5', ["███", "█  ", "███", "  █", "███"]),
        ('6', ["███", "█  ", "███", "█ █", "███"]),
        ('7', ["███", "  █", "  █", "  █", "  █"]),
        ('8', ["███", "█ █", "███", "█ █", "███"]),
        ('9', ["███", "█ █", "███", "  █", "███"]),
        ('.', ["   ", "   ", "   ", "   ", " █ "]),
        ('%', ["█ █", "  █", " █ ", "█  ", "█ █"]),
    ];
    let mut rows = vec![String::new(); 5];
    for c in text.chars() {
        if let Some((_, glyph)) = GLYPHS.iter().find(|(g, _)| *g == c) {
            for (row, part) in rows.iter_mut().zip(glyph) {
                row.push_str(part);
                row.push(' ');
            }
        }
    }
    rows
}

/// `last`, `mean`, or the prompt with its template and label words.
fn readout_name(f: &FinetuneSettings) -> String {
    match f.readout {
        Readout::Last => "last".into(),
        Readout::Mean => "mean".into(),
        Readout::Layers => "all layers".into(),
        Readout::Prompt => format!(
            "prompt \"…{}\" → {} / {}",
            f.template, f.label_words[0], f.label_words[1]
        ),
    }
}

fn draw_summary(frame: &mut Frame, c: &ClassifyTab, shared: &Shared, area: Rect) {
    let mut lines = vec![Line::from(vec![
        Span::styled("base ", theme::muted()),
        Span::raw(c.info.as_ref().map_or_else(
            || Base::parse(&shared.settings.finetune.base).describe(),
            |i| i.model.clone(),
        )),
    ])];
    let shown = c
        .done
        .as_ref()
        .map(|d| (d.val_acc, format!("best epoch {}", d.best_epoch)))
        .or_else(|| {
            c.epochs
                .iter()
                .map(|m| m.val_acc)
                .reduce(f64::max)
                .map(|a| (a, "best so far".to_string()))
        });
    match shown {
        Some((acc, label)) => {
            lines.push(Line::styled(
                format!("validation accuracy ({label})"),
                theme::muted(),
            ));
            for row in big_text(&format!("{acc:.3}")) {
                lines.push(Line::styled(row, theme::title()));
            }
        }
        None => lines.push(Line::styled(
            "validation accuracy appears after the first epoch",
            theme::muted(),
        )),
    }
    lines.push(Line::from(""));
    if let Some(info) = &c.info {
        lines.push(Line::from(format!(
            "train {} ({:.1}% pos.)",
            info.train_examples,
            100.0 * info.train_positive
        )));
        lines.push(Line::from(format!(
            "validation {} ({:.1}% pos.)",
            info.val_examples,
            100.0 * info.val_positive
        )));
        lines.push(Line::from(format!(
            "epoch {} of {}",
            c.epochs.len(),
            info.epochs
        )));
    }
    if let Some(d) = &c.done {
        let m = d.confusion;
        lines.push(Line::from(""));
        lines.push(Line::styled(
            "confusion (rows: true, cols: predicted)",
            theme::muted(),
        ));
        lines.push(Line::from("            neg    pos     F1"));
        for (k, name) in ["negative", "positive"].iter().enumerate() {
            lines.push(Line::from(format!(
                "  {name} {:>5}  {:>5}  {:.3}",
                m[k][0], m[k][1], d.f1[k]
            )));
        }
        lines.push(Line::from(format!("calibration error (ECE) {:.3}", d.ece)));
        lines.push(Line::styled(
            format!("saved to {}", d.checkpoint.display()),
            theme::muted(),
        ));
        if !d.mistakes.is_empty() {
            lines.push(Line::styled(
                format!("most confident mistakes (↑↓, {})", d.mistakes.len()),
                theme::muted(),
            ));
            for mistake in d.mistakes.iter().skip(c.mistake_row) {
                lines.push(Line::from(format!(
                    "{:.2} {}: {}",
                    mistake.p_positive,
                    ["neg", "pos"][mistake.label.min(1)],
                    mistake.text
                )));
            }
        }
    }
    if let Some(message) = &c.message {
        if !c.epochs.is_empty() {
            lines.push(Line::styled(message.clone(), theme::error()));
        }
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" result ")),
        area,
    );
}

fn draw_sentence(frame: &mut Frame, c: &ClassifyTab, area: Rect) {
    let [input, result] =
        Layout::vertical([Constraint::Length(3), Constraint::Length(3)]).areas(area);
    let style = if c.editing {
        theme::key()
    } else {
        theme::muted()
    };
    let inner = usize::from(input.width.saturating_sub(2));
    let text = Line::from(c.input.spans(inner, Style::default(), c.editing));
    frame.render_widget(
        Paragraph::new(text).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(style)
                .title(" sentence (i to type, Enter classifies) "),
        ),
        input,
    );
    match &c.last {
        Some((text, p)) => {
            let label = if *p >= 0.5 { "positive" } else { "negative" };
            frame.render_widget(
                Gauge::default()
                    .block(
                        Block::default()
                            .borders(Borders::ALL)
                            .title(format!(" {label}: {text} ")),
                    )
                    .gauge_style(Style::default().fg(if *p >= 0.5 {
                        ratatui::style::Color::Green
                    } else {
                        ratatui::style::Color::Red
                    }))
                    .ratio(p.clamp(0.0, 1.0))
                    .label(format!("P(positive) = {p:.3}")),
                result,
            );
        }
        None => frame.render_widget(
            Paragraph::new(Line::styled(
                "P(positive) shows here once a classifier exists",
                theme::muted(),
            ))
            .alignment(Alignment::Left)
            .block(Block::default().borders(Borders::ALL)),
            result,
        ),
    }
}
