//! The settings in which runs differ: each run's record flattened to `section.key`
//! values, and the keys whose values are not all the same.
use std::collections::BTreeMap;

pub use crate::protocol::DiffRow;
use crate::protocol::RunRecord;

/// A record's settings as `section.key` → value (strings bare, the rest as JSON).
pub fn flatten(record: &RunRecord) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let value = match (&record.settings, &record.finetune) {
        (Some(s), _) => serde_json::to_value(s),
        (None, Some(f)) => serde_json::to_value(f).map(|v| serde_json::json!({ "finetune": v })),
        (None, None) => return out,
    };
    if let Ok(value) = value {
        walk("", &value, &mut out);
    }
    out.insert("kind".into(), record.kind.to_string());
    out
}

fn walk(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(&key, v, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        serde_json::Value::Null => {
            out.insert(prefix.to_string(), "-".into());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The keys whose values differ among these flattened settings, in key order.
pub fn diff(runs: &[BTreeMap<String, String>]) -> Vec<DiffRow> {
    let mut keys: Vec<&String> = runs.iter().flat_map(|r| r.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let values: Vec<String> = runs
                .iter()
                .map(|r| r.get(key).cloned().unwrap_or_else(|| "-".into()))
                .collect();
            values.iter().any(|v| *v != values[0]).then(|| DiffRow {
                key: key.clone(),
                values,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::protocol::RunKind;

    fn record(settings: Settings) -> RunRecord {
        RunRecord {
            kind: RunKind::LanguageModel,
            started: 0,
            settings: Some(Box::new(settings)),
            finetune: None,
            resumed_at: 0,
        }
    }

    #[test]
    fn only_the_settings_that_differ_are_named() {
        let a = Settings::default();
        let mut b = a.clone();
        b.train.learning_rate = 3e-4;
        b.train.seed = 7;
        let mut c = a.clone();
        c.train.seed = 7;
        let rows = diff(&[
            flatten(&record(a)),
            flatten(&record(b)),
            flatten(&record(c)),
        ]);
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["train.learning_rate", "train.seed"]);
        assert_eq!(rows[0].values, ["0.001", "0.0003", "0.001"]);
        assert_eq!(rows[1].values, ["1337", "7", "7"]);
        assert!(diff(&[flatten(&record(Settings::default()))]).is_empty());
    }
}
