//! Files from the Hugging Face hub (the `hf-hub` crate), kept in the standard Hugging
//! Face cache. Honours `HF_HOME` (cache location), `HF_ENDPOINT` (the server) and
//! `HF_HUB_OFFLINE` (cache only); offline without a cached copy is a clear error.
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

/// The dataset repository that holds SST-2.
pub const GLUE_REPO: &str = "nyu-mll/glue";

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

fn endpoint() -> String {
    std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into())
}

/// One file of a hub repository: from the cache, else downloaded into it.
pub fn fetch(repo: &str, kind: RepoType, file: &str, what_to_do: &str) -> Result<PathBuf> {
    let repo_ref = Repo::new(repo.to_string(), kind);
    let cache = Cache::from_env();
    if let Some(path) = cache.repo(repo_ref.clone()).get(file) {
        return Ok(path);
    }
    if offline() {
        bail!(
            "HF_HUB_OFFLINE is set and {repo}/{file} is not in the Hugging Face cache ({}); {what_to_do}",
            cache.path().display()
        );
    }
    let api = ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| anyhow!("cannot set up the Hugging Face hub client: {e}"))?;
    api.repo(repo_ref).get(file).map_err(|e| {
        anyhow!(
            "cannot download {file} of {repo} from {} ({e}); {what_to_do}",
            endpoint()
        )
    })
}

/// SST-2's train (and validation) parquet files from `nyu-mll/glue`; returns the
/// directory that holds `sst2/`.
pub fn fetch_sst2(with_validation: bool) -> Result<PathBuf> {
    let help = "without network access, put the GLUE files (train.tsv, dev.tsv) or the Hugging Face files \
                (sst2/train-00000-of-00001.parquet, sst2/validation-00000-of-00001.parquet) in a folder and \
                pass --sst2 FOLDER, or in the dashboard set `sst2 = \"FOLDER\"` under [finetune] in config.toml";
    let train = fetch(
        GLUE_REPO,
        RepoType::Dataset,
        "sst2/train-00000-of-00001.parquet",
        help,
    )?;
    if with_validation {
        fetch(
            GLUE_REPO,
            RepoType::Dataset,
            "sst2/validation-00000-of-00001.parquet",
            help,
        )?;
    }
    train
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.to_path_buf())
        .ok_or_else(|| anyhow!("unexpected cache path {}", train.display()))
}

/// A GPT-2 model (`gpt2`, `distilgpt2`, or any `owner/name`) as a directory holding
/// `config.json`, `model.safetensors` and `tokenizer.json`.
pub fn fetch_gpt2(name: &str) -> Result<PathBuf> {
    let repo = match name {
        "gpt2" => "openai-community/gpt2",
        "distilgpt2" => "distilbert/distilgpt2",
        other => other,
    };
    let help = "without network access, download config.json, model.safetensors and tokenizer.json of the \
                model elsewhere and pass --init FOLDER";
    let mut dir = None;
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let path = fetch(repo, RepoType::Model, file, help)?;
        dir = path.parent().map(|p| p.to_path_buf());
    }
    dir.ok_or_else(|| anyhow!("no files fetched for {repo}"))
}
