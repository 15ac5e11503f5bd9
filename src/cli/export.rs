//! `gptdash export --checkpoint DIR --hf OUT`: a model gptdash loads, written as a
//! Hugging Face GPT-2 folder — `config.json` (transformers' `GPT2Config`),
//! `model.safetensors` (GPT-2's names and layouts), `tokenizer.json` and the
//! special-token files — that `GPT2LMHeadModel.from_pretrained(OUT)` and
//! `AutoTokenizer.from_pretrained(OUT)` load, and `--init OUT` loads back. A fine-tuned
//! classifier exports its language model; its head is named as left out.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::checkpoint::{
    load_model, write_atomically, write_json, CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE,
};
use crate::classifier;
use crate::data::tokenizer::END_OF_TEXT;
use crate::model::hf::{self, Provenance};
use crate::protocol::{Event, Exported};

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The model to export: a gptdash checkpoint (or any folder gptdash loads).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// The Hugging Face folder to write: new, empty, or an earlier export (replaced).
    #[arg(long, value_name = "OUT")]
    pub hf: PathBuf,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Files of the exported folder, in the order they are written.
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
const SPECIAL_TOKENS: &str = "special_tokens_map.json";
const GENERATION_CONFIG: &str = "generation_config.json";
const FILES: [&str; 6] = [
    CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG,
    SPECIAL_TOKENS,
    GENERATION_CONFIG,
];

pub fn run(args: &ExportArgs) -> Result<()> {
    check_destination(&args.checkpoint, &args.hf)?;
    let exported = export(&args.checkpoint, &args.hf)?;
    if args.json {
        println!("{}", Event::Exported(Box::new(exported)).to_json());
        return Ok(());
    }
    println!(
        "exported {} to {} as a Hugging Face GPT-2 model: {:.2}M parameters, vocabulary {}, context {}",
        args.checkpoint.display(),
        exported.path.display(),
        exported.params as f64 / 1e6,
        exported.vocab_size,
        exported.block_size
    );
    println!("  files: {}", exported.files.join(", "));
    for note in &exported.notes {
        println!("  note: {note}");
    }
    for item in &exported.left_out {
        println!("  left out: {item}");
    }
    println!(
        "  load it with: GPT2LMHeadModel.from_pretrained({0:?}), AutoTokenizer.from_pretrained({0:?}); back into gptdash with --init {0}",
        exported.path.display().to_string()
    );
    Ok(())
}

/// The destination must not be the source, and must be new, empty, or an earlier export
/// (its `config.json` has the `gptdash` record): anything else is a user's folder that a
/// replacing write would delete.
fn check_destination(source: &Path, out: &Path) -> Result<()> {
    if out.is_file() {
        bail!("--hf {}: is a file, not a folder", out.display());
    }
    if !out.is_dir() {
        return Ok(());
    }
    if let (Ok(a), Ok(b)) = (source.canonicalize(), out.canonicalize()) {
        if a == b {
            bail!(
                "--hf {}: is the checkpoint being exported; choose another folder",
                out.display()
            );
        }
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(out)
        .with_context(|| format!("--hf {}: cannot read the folder", out.display()))?
    {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    // An earlier export holds the files an export writes and nothing else (a Trainer's
    // checkpoint keeps the gptdash record too, beside its optimizer state: not ours).
    let ours = |name: &String| FILES.contains(&name.as_str()) || name == ".complete";
    let earlier_export = hf::read_provenance(out).is_some() && names.iter().all(ours);
    if !names.is_empty() && !earlier_export {
        bail!(
            "--hf {}: the folder exists and is not an earlier gptdash export; choose a new folder (nothing was written)",
            out.display()
        );
    }
    Ok(())
}

/// Writes the export of `checkpoint` to `out` (atomically: a failed export leaves `out`
/// as it was) and says what it wrote.
pub(crate) fn export(checkpoint: &Path, out: &Path) -> Result<Exported> {
    let loaded = load_model(checkpoint, tch::Device::Cpu)?;
    let model = loaded.config.model;
    let eot = loaded.tokenizer.eot_id();
    let tensors = hf::export_tensors(&loaded.vs)?;
    let provenance = Provenance {
        source: checkpoint.display().to_string(),
        corpus: loaded.config.corpus.clone(),
        data_mode: loaded.config.data_mode,
        text_form: loaded.config.text_form,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let config = hf::config_json(&model, eot, &provenance);
    let mut left_out = Vec::new();
    if let Some(info) = classifier::read_info(checkpoint)? {
        left_out.push(format!(
            "the classifier head (classifier.weight, classifier.bias; {} read-out, validation accuracy {:.3}): GPT2LMHeadModel has no place for it, and GPT2ForSequenceClassification reads only the last token without a bias; classify with the gptdash checkpoint",
            serde_json::to_value(info.readout)?.as_str().unwrap_or("?"),
            info.val.acc
        ));
    }
    let mut notes = Vec::new();
    match eot {
        Some(_) if loaded.frames_sentences() => notes.push(format!(
            "the model was trained on text framed by {END_OF_TEXT} ({} mode): start inputs with it",
            loaded.config.data_mode.name()
        )),
        Some(_) => {}
        None => left_out.push(format!(
            "special tokens: the tokenizer has no {END_OF_TEXT}, so bos/eos are unset"
        )),
    }
    if let Some(done) = loaded.config.text_form.describe() {
        notes.push(format!(
            "the training text was {done} before tokenizing (the tokenizer does not do it; gptdash does it for you): prepare inputs the same way"
        ));
    }
    let special = eot.map(|_| END_OF_TEXT);
    let tokenizer_config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model.block_size,
        "bos_token": special,
        "eos_token": special,
        "unk_token": special,
        "add_prefix_space": false,
        "clean_up_tokenization_spaces": false,
    });
    let special_tokens = match special {
        Some(t) => serde_json::json!({"bos_token": t, "eos_token": t, "unk_token": t}),
        None => serde_json::json!({}),
    };
    let generation = serde_json::json!({"bos_token_id": eot, "eos_token_id": eot});
    let tokenizer = &loaded.tokenizer;
    write_atomically(out, |dir| {
        crate::model::safetensors::write_safetensors(
            &tensors,
            &dir.join(MODEL_FILE),
            &[("format", "pt".into())],
        )?;
        write_json(&dir.join(CONFIG_FILE), &config)?;
        tokenizer.save(&dir.join(TOKENIZER_FILE))?;
        write_json(&dir.join(TOKENIZER_CONFIG), &tokenizer_config)?;
        write_json(&dir.join(SPECIAL_TOKENS), &special_tokens)?;
        write_json(&dir.join(GENERATION_CONFIG), &generation)
    })
    .with_context(|| format!("--hf {}", out.display()))?;
    Ok(Exported {
        path: out.to_path_buf(),
        source: checkpoint.to_path_buf(),
        params: tensors.iter().map(|(_, t)| t.numel() as i64).sum(),
        vocab_size: model.vocab_size,
        block_size: model.block_size,
        tied_lm_head: model.tie_lm_head,
        files: FILES.map(String::from).to_vec(),
        notes,
        left_out,
    })
}
