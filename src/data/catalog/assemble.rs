//! A catalog entry's text file assembled from its downloaded parquet files: documents
//! read from the text column, cleaned the entry's way, one per line or between marker
//! lines, deduplicated and shuffled where the entry says.
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::{Clean, Documents, Entry};

/// The line between two articles of an `articles` entry in its assembled file.
pub const ARTICLE_MARKER: &str = "<|endoftext|>";

/// Writes the entry's documents from its parquet `sources` into the text file `out`
/// (through a temporary file renamed into place): one per line (`rows`), separated by
/// [`ARTICLE_MARKER`] lines (`articles`), or as one text (`whole`).
pub fn assemble(
    entry: &Entry,
    sources: &[PathBuf],
    out: &Path,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<()> {
    let column = entry.column.as_deref().unwrap_or("text");
    let mut docs: Vec<String> = Vec::new();
    let dir = out
        .parent()
        .ok_or_else(|| anyhow!("no folder for {}", out.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (tmp, file) = crate::data::files::create_temp_beside(out)
        .with_context(|| format!("cannot write beside {}", out.display()))?;
    let result = (|| -> Result<()> {
        let mut w = std::io::BufWriter::new(file);
        // Documents are kept in memory only to deduplicate or shuffle them (IMDb: 130 MB);
        // otherwise they stream to the file as each row group is read.
        let hold = entry.dedup || entry.shuffle_seed.is_some();
        let mut seen = HashSet::new();
        let mut article = String::new();
        let mut first_article = true;
        for (i, source) in sources.iter().enumerate() {
            progress("assemble", i as u64, sources.len() as u64);
            for_each_string(source, column, &mut |raw| {
                crate::interrupt::check()?;
                match entry.documents {
                    Documents::Rows => {
                        let doc = clean(entry.clean, raw);
                        if doc.is_empty() {
                            return Ok(());
                        }
                        if entry.dedup {
                            let digest: [u8; 32] = sha2::Sha256::digest(doc.as_bytes()).into();
                            if !seen.insert(digest) {
                                return Ok(());
                            }
                        }
                        if hold {
                            docs.push(doc);
                        } else {
                            writeln!(w, "{doc}")?;
                        }
                    }
                    Documents::Articles => {
                        if is_article_title(raw) && !article.trim().is_empty() {
                            if !first_article {
                                writeln!(w, "{ARTICLE_MARKER}")?;
                            }
                            first_article = false;
                            w.write_all(article.trim().as_bytes())?;
                            writeln!(w)?;
                            article.clear();
                        }
                        article.push_str(raw);
                        if !raw.ends_with('\n') {
                            article.push('\n');
                        }
                    }
                    _ => w.write_all(raw.as_bytes())?,
                }
                Ok(())
            })?;
        }
        if !article.trim().is_empty() {
            if !first_article {
                writeln!(w, "{ARTICLE_MARKER}")?;
            }
            w.write_all(article.trim().as_bytes())?;
            writeln!(w)?;
        }
        if let Some(seed) = entry.shuffle_seed {
            crate::rng::SplitMix64::new(seed).shuffle(&mut docs);
        }
        if hold {
            for doc in &docs {
                writeln!(w, "{doc}")?;
            }
        }
        w.into_inner()
            .map_err(|e| anyhow!("cannot write {}: {e}", tmp.display()))?
            .sync_all()?;
        std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
        progress("assemble", sources.len() as u64, sources.len() as u64);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("assembling corpus `{}`", entry.name))
}

use sha2::Digest;

/// A WikiText article title: ` = Title = ` (one `=` each side; sections have more).
pub(super) fn is_article_title(row: &str) -> bool {
    let t = row.trim();
    t.len() > 4
        && t.starts_with("= ")
        && t.ends_with(" =")
        && !t.starts_with("= =")
        && !t.ends_with("= =")
}

/// A document's text as the entry's cleaning asks, whitespace runs collapsed to a space.
pub fn clean(how: Option<Clean>, raw: &str) -> String {
    let text = match how {
        Some(Clean::Imdb) => {
            let mut out = String::with_capacity(raw.len());
            for c in raw.replace("<br />", " ").replace("<br/>", " ").chars() {
                match c {
                    '\u{91}' => out.push('\u{2018}'),
                    '\u{92}' => out.push('\u{2019}'),
                    '\u{93}' => out.push('\u{201c}'),
                    '\u{94}' => out.push('\u{201d}'),
                    '\u{96}' => out.push('\u{2013}'),
                    '\u{97}' => out.push('\u{2014}'),
                    '\u{85}' => out.push('\u{2026}'),
                    '\u{80}'..='\u{9f}' => {}
                    c => out.push(c),
                }
            }
            out
        }
        None => raw.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Calls `f` with each value of the string column `column` of a parquet file, in order,
/// reading one row group at a time.
pub fn for_each_string(
    path: &Path,
    column: &str,
    f: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let file = crate::data::files::open_regular(path, "parquet file", u64::MAX)?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{} is not a parquet file", path.display()))?;
    let schema = reader.metadata().file_metadata().schema_descr();
    if !(0..schema.num_columns()).any(|i| schema.column(i).name() == column) {
        bail!("{} has no column `{column}`", path.display());
    }
    for g in 0..reader.num_row_groups() {
        let group = reader
            .get_row_group(g)
            .with_context(|| format!("{}: row group {g}", path.display()))?;
        let projection = {
            let full = schema.root_schema().clone();
            let fields: Vec<_> = full
                .get_fields()
                .iter()
                .filter(|t| t.name() == column)
                .cloned()
                .collect();
            parquet::schema::types::Type::group_type_builder(full.name())
                .with_fields(fields)
                .build()
                .with_context(|| format!("{}: column `{column}`", path.display()))?
        };
        let rows = group
            .get_row_iter(Some(projection))
            .with_context(|| format!("{}: row group {g}", path.display()))?;
        for row in rows {
            let row = row.with_context(|| format!("{}: row group {g}", path.display()))?;
            for (_, field) in row.get_column_iter() {
                match field {
                    Field::Str(s) => f(s)?,
                    Field::Null => {}
                    other => bail!(
                        "{}: column `{column}` holds {other:?}, not text",
                        path.display()
                    ),
                }
            }
        }
    }
    Ok(())
}
