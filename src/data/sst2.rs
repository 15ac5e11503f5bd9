//! SST-2 sentiment data: GLUE TSV files or the Hugging Face parquet layout, the
//! assignment's protocol (the first N training rows, a seeded stratified split).
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

use crate::config::FinetuneSettings;
use crate::rng::SplitMix64;

/// One labelled sentence; label 1 = positive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labeled {
    pub sentence: String,
    pub label: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    Train,
    Validation,
}

impl Split {
    fn tsv_name(self) -> &'static str {
        match self {
            Split::Train => "train.tsv",
            Split::Validation => "dev.tsv",
        }
    }

    fn parquet_name(self) -> &'static str {
        match self {
            Split::Train => "train-00000-of-00001.parquet",
            Split::Validation => "validation-00000-of-00001.parquet",
        }
    }
}

/// Finds the file of `split` under `source`: a `.tsv` or `.parquet` file (for the train
/// split), or a directory holding `train.tsv`/`dev.tsv` or the Hugging Face layout
/// `sst2/train-00000-of-00001.parquet` (also directly inside the directory).
pub(crate) fn locate(source: &Path, split: Split) -> Result<PathBuf> {
    if source.is_file() {
        if split == Split::Train {
            return Ok(source.to_path_buf());
        }
        let dir = source.parent().unwrap_or(Path::new("."));
        return locate(dir, split);
    }
    if !source.is_dir() {
        bail!("SST-2 data {} does not exist (give train.tsv, a parquet file, or a directory holding them)", source.display());
    }
    let candidates = [
        source.join(split.tsv_name()),
        source.join("sst2").join(split.parquet_name()),
        source.join(split.parquet_name()),
        source.join("hf/sst2").join(split.parquet_name()),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "no SST-2 {} split under {}: expected {} (GLUE) or sst2/{} (Hugging Face layout)",
                match split {
                    Split::Train => "train",
                    Split::Validation => "validation",
                },
                source.display(),
                split.tsv_name(),
                split.parquet_name()
            )
        })
}

/// Reads a TSV or parquet file by its extension.
pub(crate) fn read_file(path: &Path) -> Result<Vec<Labeled>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => read_parquet(path),
        _ => read_tsv(path),
    }
}

fn parse_label(text: &str) -> Option<u8> {
    match text.trim() {
        "0" => Some(0),
        "1" => Some(1),
        _ => None,
    }
}

/// GLUE TSV: header `sentence<TAB>label`, then one row per line.
pub fn read_tsv(path: &Path) -> Result<Vec<Labeled>> {
    let bytes = crate::data::files::read_regular(path, "SST-2 file")?;
    // A byte-order mark before the header is accepted; anywhere else it is an error.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let line_no = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            bail!(
                "{}:{line_no}: not UTF-8 text (bad byte at offset {}); save the file as UTF-8",
                path.display(),
                e.valid_up_to()
            );
        }
    };
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = match lines.next() {
        Some((_, h)) => h.trim_end_matches('\r').split('\t').collect(),
        None => bail!(
            "{}: the file is empty (expected a header `sentence<TAB>label`)",
            path.display()
        ),
    };
    let sentence_col = header.iter().position(|h| *h == "sentence");
    let label_col = header.iter().position(|h| *h == "label");
    let (Some(sentence_col), Some(label_col)) = (sentence_col, label_col) else {
        bail!(
            "{}:1: wrong header {:?}; expected `sentence<TAB>label`",
            path.display(),
            header.join("\t")
        );
    };
    let mut rows = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with('\u{feff}') {
            bail!(
                "{}:{line_no}: starts with a byte-order mark (U+FEFF), which belongs only before the header; remove it",
                path.display()
            );
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != header.len() {
            bail!(
                "{}:{line_no}: expected {} tab-separated columns, found {}",
                path.display(),
                header.len(),
                fields.len()
            );
        }
        let sentence = fields[sentence_col].trim();
        if sentence.is_empty() {
            bail!("{}:{line_no}: empty sentence", path.display());
        }
        let label = parse_label(fields[label_col]).ok_or_else(|| {
            anyhow!(
                "{}:{line_no}: label must be 0 or 1, got {:?}",
                path.display(),
                fields[label_col]
            )
        })?;
        rows.push(Labeled {
            sentence: sentence.to_string(),
            label,
        });
    }
    if rows.is_empty() {
        bail!("{}: no rows after the header", path.display());
    }
    Ok(rows)
}

/// Hugging Face parquet: columns `sentence` (string) and `label` (integer); others ignored.
pub(crate) fn read_parquet(path: &Path) -> Result<Vec<Labeled>> {
    let file =
        crate::data::files::open_regular(path, "SST-2 file", crate::data::files::MAX_FILE_BYTES)?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{} is not a parquet file", path.display()))?;
    let columns: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    for needed in ["sentence", "label"] {
        if !columns.iter().any(|c| c == needed) {
            bail!(
                "{}: missing column `{needed}` (columns: {})",
                path.display(),
                columns.join(", ")
            );
        }
    }
    let mut rows = Vec::new();
    let iter = reader
        .get_row_iter(None)
        .with_context(|| format!("cannot read rows of {}", path.display()))?;
    for (i, row) in iter.enumerate() {
        let row = row.with_context(|| format!("{}: row {}", path.display(), i + 1))?;
        let (mut sentence, mut label) = (None, None);
        for (name, field) in row.get_column_iter() {
            match (name.as_str(), field) {
                ("sentence", Field::Str(s)) => sentence = Some(s.clone()),
                ("label", Field::Long(v)) => label = Some(*v),
                ("label", Field::Int(v)) => label = Some(*v as i64),
                ("label", Field::Short(v)) => label = Some(*v as i64),
                ("label", Field::Byte(v)) => label = Some(*v as i64),
                ("sentence" | "label", other) => {
                    bail!(
                        "{}: row {}: column `{name}` has an unexpected value {other}",
                        path.display(),
                        i + 1
                    )
                }
                _ => {}
            }
        }
        let sentence = sentence.unwrap_or_default();
        if sentence.trim().is_empty() {
            bail!("{}: row {}: empty sentence", path.display(), i + 1);
        }
        let label = match label {
            Some(0) => 0,
            Some(1) => 1,
            other => bail!(
                "{}: row {}: label must be 0 or 1, got {other:?}",
                path.display(),
                i + 1
            ),
        };
        rows.push(Labeled {
            sentence: sentence.trim().to_string(),
            label,
        });
    }
    if rows.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(rows)
}

/// A seeded split that keeps the class ratio: each class contributes its share of
/// validation rows (largest remainders make the total `round(n · val_fraction)`), both
/// parts keep the original row order.
pub(crate) fn stratified_split(
    rows: &[Labeled],
    val_fraction: f64,
    seed: u64,
) -> Result<(Vec<Labeled>, Vec<Labeled>)> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        bail!("val_fraction must be in (0, 1), got {val_fraction}");
    }
    let total_val = ((rows.len() as f64) * val_fraction).round() as usize;
    if total_val == 0 || total_val >= rows.len() {
        bail!(
            "{} rows cannot be split with val_fraction {val_fraction}",
            rows.len()
        );
    }
    let by_class: Vec<Vec<usize>> = (0..=1u8)
        .map(|c| {
            rows.iter()
                .enumerate()
                .filter(|(_, r)| r.label == c)
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    let exact: Vec<f64> = by_class
        .iter()
        .map(|idx| idx.len() as f64 * total_val as f64 / rows.len() as f64)
        .collect();
    let mut quota: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..quota.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    for &c in order
        .iter()
        .cycle()
        .take(total_val.saturating_sub(quota.iter().sum()))
    {
        quota[c] += 1;
    }
    let mut is_val = vec![false; rows.len()];
    let mut rng = SplitMix64::new(seed);
    for (class, idx) in by_class.iter().enumerate() {
        let mut shuffled = idx.clone();
        rng.shuffle(&mut shuffled);
        for &i in shuffled.iter().take(quota[class]) {
            is_val[i] = true;
        }
    }
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (row, v) in rows.iter().zip(is_val) {
        if v {
            val.push(row.clone());
        } else {
            train.push(row.clone());
        }
    }
    Ok((train, val))
}

/// The assignment's protocol as `[finetune]` settings describe it: the first
/// `samples` rows of the train split from `sst2` (`hub` or a path), split with the
/// seeded stratified split.
#[derive(Debug, Clone)]
pub(crate) struct ProtocolData {
    /// Folder holding the splits (for `--eval-split validation`).
    pub data_dir: PathBuf,
    pub train_file: PathBuf,
    pub train: Vec<Labeled>,
    pub val: Vec<Labeled>,
}

pub(crate) fn load_protocol(
    settings: &FinetuneSettings,
    with_validation: bool,
) -> Result<ProtocolData> {
    let data_dir = if settings.sst2 == "hub" {
        crate::data::hub::fetch_sst2(with_validation)?
    } else {
        PathBuf::from(&settings.sst2)
    };
    let train_file = locate(&data_dir, Split::Train).context(
        "point --sst2 (or, in the dashboard, `sst2` under [finetune] in config.toml) at a train.tsv, a parquet file or a folder holding them, or \"hub\"",
    )?;
    let mut rows = read_file(&train_file)?;
    if rows.len() < settings.samples {
        bail!(
            "{} has {} rows, fewer than --samples (finetune.samples) {}",
            train_file.display(),
            rows.len(),
            settings.samples
        );
    }
    rows.truncate(settings.samples);
    let positive = rows.iter().filter(|r| r.label == 1).count();
    if positive == 0 || positive == rows.len() {
        bail!(
            "{}: the first {} rows (--samples, finetune.samples) are all {}: a classifier needs both classes to learn and to be measured",
            train_file.display(),
            rows.len(),
            if positive == 0 { "negative (label 0)" } else { "positive (label 1)" }
        );
    }
    let split_seed = settings.split_seed.unwrap_or(settings.seed);
    let (mut train, val) = stratified_split(&rows, settings.val_fraction, split_seed)?;
    if let Some(extra) = &settings.extra_train {
        let extra = read_file(Path::new(extra)).context("--extra-train / finetune.extra_train")?;
        train.extend(extra);
    }
    Ok(ProtocolData {
        data_dir,
        train_file,
        train,
        val,
    })
}

pub(crate) fn positive_share(rows: &[Labeled]) -> f64 {
    rows.iter().filter(|r| r.label == 1).count() as f64 / rows.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, positive_every: usize) -> Vec<Labeled> {
        (0..n)
            .map(|i| Labeled {
                sentence: format!("s{i}"),
                label: u8::from(i % positive_every == 0),
            })
            .collect()
    }

    #[test]
    fn stratified_split_keeps_the_ratio_and_is_seeded() {
        for (n, every) in [(1200, 2), (1200, 3), (101, 4), (10, 2)] {
            let data = rows(n, every);
            let (train, val) = stratified_split(&data, 0.2, 7).unwrap();
            assert_eq!(train.len() + val.len(), n);
            assert_eq!(val.len(), (n as f64 * 0.2).round() as usize);
            let pos = data.iter().filter(|r| r.label == 1).count() as f64;
            let expected_val_pos = pos * val.len() as f64 / n as f64;
            let val_pos = val.iter().filter(|r| r.label == 1).count() as f64;
            assert!(
                (val_pos - expected_val_pos).abs() <= 1.0,
                "{n}/{every}: {val_pos} vs {expected_val_pos}"
            );
            let expected_train_pos = pos * train.len() as f64 / n as f64;
            let train_pos = train.iter().filter(|r| r.label == 1).count() as f64;
            assert!((train_pos - expected_train_pos).abs() <= 1.0);
            let again = stratified_split(&data, 0.2, 7).unwrap();
            assert_eq!((train.clone(), val.clone()), again);
            let other = stratified_split(&data, 0.2, 8).unwrap();
            if n > 10 {
                assert_ne!(val, other.1, "another seed picks other rows");
            }
        }
        assert!(stratified_split(&rows(10, 2), 1.0, 1).is_err());
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn tsv_reads_and_rejects_bad_input_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ok = write(
            d,
            "train.tsv",
            "sentence\tlabel\ngreat film \t1\nawful \t0\n",
        );
        assert_eq!(
            read_tsv(&ok).unwrap(),
            vec![
                Labeled {
                    sentence: "great film".into(),
                    label: 1
                },
                Labeled {
                    sentence: "awful".into(),
                    label: 0
                }
            ]
        );
        let cases = [
            (
                "header.tsv",
                "text\tlabel\nfine\t1\n",
                "header.tsv:1: wrong header",
            ),
            (
                "label.tsv",
                "sentence\tlabel\nfine\t1\nbad\t2\n",
                "label.tsv:3: label must be 0 or 1",
            ),
            (
                "empty.tsv",
                "sentence\tlabel\n  \t1\n",
                "empty.tsv:2: empty sentence",
            ),
            (
                "cols.tsv",
                "sentence\tlabel\njust text\n",
                "cols.tsv:2: expected 2 tab-separated columns",
            ),
            ("nothing.tsv", "", "nothing.tsv: the file is empty"),
            (
                "bom-row.tsv",
                "sentence\tlabel\nfine\t1\n\u{feff}bad\t0\n",
                "bom-row.tsv:3: starts with a byte-order mark",
            ),
        ];
        for (name, text, needle) in cases {
            let msg = format!("{:#}", read_tsv(&write(d, name, text)).unwrap_err());
            assert!(msg.contains(needle), "{name}: {msg}");
        }
        // A byte-order mark on the header is simply accepted.
        let bom = write(d, "bom.tsv", "\u{feff}sentence\tlabel\ngreat film\t1\n");
        assert_eq!(read_tsv(&bom).unwrap().len(), 1);
        // Bytes that are not UTF-8: the line they are on.
        let path = d.join("latin1.tsv");
        std::fs::write(&path, b"sentence\tlabel\nfine\t1\ncaf\xe9 noir\t0\n").unwrap();
        let msg = format!("{:#}", read_tsv(&path).unwrap_err());
        assert!(msg.contains("latin1.tsv:3: not UTF-8"), "{msg}");
    }

    #[test]
    fn locate_finds_glue_and_hugging_face_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "train.tsv", "sentence\tlabel\na\t1\n");
        assert_eq!(locate(d, Split::Train).unwrap(), d.join("train.tsv"));
        let msg = format!("{:#}", locate(d, Split::Validation).unwrap_err());
        assert!(
            msg.contains("dev.tsv") && msg.contains("validation-00000-of-00001.parquet"),
            "{msg}"
        );
        let hf = d.join("hf");
        std::fs::create_dir_all(hf.join("sst2")).unwrap();
        write(&hf.join("sst2"), "train-00000-of-00001.parquet", "x");
        assert_eq!(
            locate(&hf, Split::Train).unwrap(),
            hf.join("sst2/train-00000-of-00001.parquet")
        );
        assert!(
            format!("{:#}", locate(&d.join("nope"), Split::Train).unwrap_err())
                .contains("does not exist")
        );
    }

    #[test]
    fn a_fixed_split_seed_keeps_the_validation_set_across_seeds() {
        let dir = tempfile::tempdir().unwrap();
        let tsv = dir.path().join("train.tsv");
        let rows: String = (0..40)
            .map(|i| format!("sentence number {i}\t{}\n", i % 2))
            .collect();
        std::fs::write(&tsv, format!("sentence\tlabel\n{rows}")).unwrap();
        let settings = |seed, split_seed| FinetuneSettings {
            sst2: tsv.display().to_string(),
            samples: 40,
            seed,
            split_seed,
            ..FinetuneSettings::default()
        };
        let val = |s: FinetuneSettings| load_protocol(&s, false).unwrap().val;
        assert_eq!(val(settings(1, Some(7))), val(settings(2, Some(7))));
        assert_eq!(val(settings(7, None)), val(settings(1, Some(7))));
        assert_ne!(val(settings(1, None)), val(settings(2, None)));
    }

    #[test]
    fn parquet_fixtures_read_and_bad_ones_are_rejected() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sst2");
        let rows = read_parquet(&fixtures.join("sst2/train-00000-of-00001.parquet")).unwrap();
        assert_eq!(rows.len(), 8);
        assert_eq!(
            rows[0],
            Labeled {
                sentence: "a warm , funny and generous film .".into(),
                label: 1
            }
        );
        let tsv = read_tsv(&fixtures.join("train.tsv")).unwrap();
        assert_eq!(rows, tsv, "the parquet and TSV fixtures hold the same rows");
        let msg = format!(
            "{:#}",
            read_parquet(&fixtures.join("bad/missing-label.parquet")).unwrap_err()
        );
        assert!(
            msg.contains("missing-label.parquet") && msg.contains("missing column `label`"),
            "{msg}"
        );
        let msg = format!(
            "{:#}",
            read_parquet(&fixtures.join("bad/label-2.parquet")).unwrap_err()
        );
        assert!(
            msg.contains("label-2.parquet")
                && msg.contains("row 2")
                && msg.contains("label must be 0 or 1"),
            "{msg}"
        );
        let msg = format!(
            "{:#}",
            read_parquet(&fixtures.join("train.tsv")).unwrap_err()
        );
        assert!(msg.contains("not a parquet file"), "{msg}");
    }
}
