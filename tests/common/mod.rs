//! Helpers shared by the integration tests: run the real binary in a scratch directory.
#![allow(dead_code)]
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn gptdash(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gptdash"))
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg-config")) // never read the developer's own config
        .env("HOME", dir)
        .env("COLUMNS", "120")
        .args(args)
        .output()
        .expect("the gptdash binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn events(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

pub fn write_corpus(dir: &Path) -> String {
    let text =
        "The cat sat. The dog ran. A cat ran. A dog sat. The cat ran. The dog sat.\n".repeat(8);
    std::fs::write(dir.join("tiny.txt"), text).unwrap();
    "tiny.txt".into()
}

pub const TINY: &[&str] = &[
    "--model",
    "gpt-nano",
    "--block-size",
    "16",
    "--batch-size",
    "8",
    "--device",
    "cpu",
];

/// Fails unless the command fails with exit code 2 and a stderr naming every needle, without a panic.
pub fn expect_error(dir: &Path, args: &[&str], needles: &[&str]) {
    let out = gptdash(dir, args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} should exit with 2:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// Trains a tiny checkpoint at `dir/ck` and returns its path relative to `dir`.
pub fn tiny_checkpoint(dir: &Path) -> String {
    tiny_checkpoint_with(dir, &[])
}

/// [`tiny_checkpoint`] with more `train` flags (e.g. `--lowercase`).
pub fn tiny_checkpoint_with(dir: &Path, flags: &[&str]) -> String {
    let corpus = write_corpus(dir);
    let mut args = vec![
        "train",
        "--corpus",
        &corpus,
        "--max-iters",
        "30",
        "--out",
        "ck",
        "--json",
    ];
    args.extend_from_slice(TINY);
    args.extend_from_slice(flags);
    let out = gptdash(dir, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    "ck".into()
}

/// A file of `tests/fixtures`.
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// A small labelled set in GLUE TSV layout.
pub fn write_sst2(dir: &Path) -> String {
    let mut text = String::from("sentence\tlabel\n");
    for i in 0..40 {
        if i % 2 == 0 {
            text.push_str(&format!("the cat sat and it was good {i} \t1\n"));
        } else {
            text.push_str(&format!("the dog ran and it was bad {i} \t0\n"));
        }
    }
    std::fs::write(dir.join("train.tsv"), text).unwrap();
    "train.tsv".into()
}

/// `finetune` of `base` (`--checkpoint DIR` or `--init NAME`) on `data`'s first 40 rows
/// for `epochs` epochs on the CPU, into `out`, as `--json` lines when `json`.
pub fn finetune_small(
    dir: &Path,
    base: [&str; 2],
    data: &str,
    epochs: &str,
    out: &str,
    json: bool,
) -> Output {
    let mut args = vec![
        "finetune",
        base[0],
        base[1],
        "--sst2",
        data,
        "--samples",
        "40",
        "--epochs",
        epochs,
        "--out",
        out,
        "--device",
        "cpu",
    ];
    if json {
        args.push("--json");
    }
    gptdash(dir, &args)
}

/// 24 SST-2 rows in `word_tokenizer`'s words (`w1 w2 w3 …` positive, `w7 w8 w9 …`
/// negative), written as a GLUE TSV at `path`.
pub fn write_word_sst2(path: &Path) {
    let mut tsv = String::from("sentence\tlabel\n");
    for i in 0..24 {
        let (words, label) = if i % 2 == 0 {
            ("w1 w2 w3", 1)
        } else {
            ("w7 w8 w9", 0)
        };
        tsv.push_str(&format!("{words} w{} \t{label}\n", 10 + i));
    }
    std::fs::write(path, tsv).unwrap();
}

/// A word-level tokenizer with exactly `n` tokens (`w0`..), the last `<|endoftext|>`.
pub fn word_tokenizer(n: usize) -> String {
    let mut vocab = serde_json::Map::new();
    for i in 0..n - 1 {
        vocab.insert(format!("w{i}"), i.into());
    }
    vocab.insert("<|endoftext|>".into(), (n - 1).into());
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": n - 1, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": false},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<|endoftext|>"}
    })
    .to_string()
}

/// A request's `Range: bytes=a-[b]`.
type Range = Option<(usize, Option<usize>)>;

/// Reads one HTTP request's target and `Range: bytes=a-[b]` header.
fn read_request(stream: &std::net::TcpStream) -> Option<(String, Range)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request = String::new();
    reader.read_line(&mut request).ok()?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            let (a, b) = v.trim().split_once('-')?;
            range = Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()));
        }
    }
    Some((
        request.split_whitespace().nth(1).unwrap_or("").to_string(),
        range,
    ))
}

/// A minimal stand-in for the hub's file endpoint: `GET [/datasets]/{repo}/resolve/{rev}/{file}`
/// with `Range` support and the headers `hf-hub` reads (etag, x-repo-commit, content-range).
pub fn serve(files: Vec<(String, Vec<u8>)>) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            let Some((path, range)) = read_request(&stream) else {
                continue;
            };
            let found = files.iter().find(|(p, _)| *p == path);
            let response = match found {
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
                Some((_, body)) => {
                    let (start, end) = match range {
                        Some((a, b)) => (a, b.unwrap_or(body.len() - 1).min(body.len() - 1)),
                        None => (0, body.len() - 1),
                    };
                    let chunk = &body[start..=end];
                    let mut r = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\n\
                         ETag: \"etag-{}\"\r\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\r\nConnection: close\r\n\r\n",
                        chunk.len(),
                        body.len(),
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(chunk);
                    r
                }
            };
            let _ = stream.write_all(&response);
            let mut sink = Vec::new();
            let _ = stream.flush();
            let _ = stream.read_to_end(&mut sink).ok().filter(|_| false);
        }
    });
    (addr, handle)
}

/// How the stand-in hub of [`serve_hub`] misbehaves for one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Sends the first half of the first download, then holds the connection open.
    StallFirst,
    /// Records this size in the repository listing instead of the real one.
    WrongSize,
    /// Records another sha256 in the repository listing.
    WrongHash,
}

/// A file a [`serve_hub`] dataset holds: its path in the repository and bytes.
pub struct HubFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub fault: Option<Fault>,
}

pub fn hub_file(path: &str, bytes: Vec<u8>) -> HubFile {
    HubFile {
        path: path.into(),
        bytes,
        fault: None,
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A stand-in for the hub serving the datasets `repos` (repo, revision, files) as the hub
/// does: `GET /datasets/{repo}/resolve/{rev}/{file}` with `Range`, the LFS headers
/// (`X-Linked-Etag` = sha256), and `GET /api/datasets/{repo}/revision/{rev}` listing every
/// file's size and LFS sha256. Returns the endpoint and a log of `path range-start`.
pub fn serve_hub(
    repos: Vec<(&str, &str, Vec<HubFile>)>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut routes: HashMap<String, (Vec<u8>, Option<Fault>, bool)> = HashMap::new();
    for (repo, rev, files) in repos {
        let siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|f| {
                let size = f.bytes.len() + usize::from(f.fault == Some(Fault::WrongSize)) * 7;
                let sha = if f.fault == Some(Fault::WrongHash) {
                    sha256_hex(b"something else")
                } else {
                    sha256_hex(&f.bytes)
                };
                serde_json::json!({"rfilename": f.path, "size": size, "lfs": {"sha256": sha, "size": size}})
            })
            .collect();
        let listing = serde_json::json!({"id": repo, "sha": "0123456789abcdef0123456789abcdef01234567", "siblings": siblings});
        routes.insert(
            format!("/api/datasets/{repo}/revision/{}", rev.replace('/', "%2F")),
            (listing.to_string().into_bytes(), None, true),
        );
        for f in files {
            routes.insert(
                format!(
                    "/datasets/{repo}/resolve/{}/{}",
                    rev.replace('/', "%2F"),
                    f.path
                ),
                (f.bytes, f.fault, false),
            );
        }
    }
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut stalled = std::collections::HashSet::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some((full, range)) = read_request(&stream) else {
                continue;
            };
            let path = full.split('?').next().unwrap_or("").to_string();
            log2.lock()
                .unwrap()
                .push(format!("{path} {}", range.map_or(0, |r| r.0)));
            let response = match routes.get(&path) {
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
                Some((body, _, true)) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                }
                Some((body, fault, false)) => {
                    let (start, end) = match range {
                        Some((a, b)) => (a, b.unwrap_or(body.len() - 1).min(body.len() - 1)),
                        None => (0, body.len() - 1),
                    };
                    let chunk = &body[start..=end];
                    let mut r = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\n\
                         ETag: \"{}\"\r\nX-Linked-Etag: \"{}\"\r\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\r\nConnection: close\r\n\r\n",
                        chunk.len(),
                        body.len(),
                        &sha256_hex(body)[..40],
                        sha256_hex(body)
                    )
                    .into_bytes();
                    let stall = *fault == Some(Fault::StallFirst)
                        && chunk.len() > 1
                        && stalled.insert(path.clone());
                    if stall {
                        r.extend_from_slice(&chunk[..chunk.len() / 2]);
                        let _ = stream.write_all(&r);
                        let _ = stream.flush();
                        // Held open: the client waits until it is stopped.
                        let hold = stream;
                        std::thread::spawn(move || {
                            std::thread::sleep(std::time::Duration::from_secs(120));
                            drop(hold);
                        });
                        continue;
                    }
                    r.extend_from_slice(chunk);
                    r
                }
            };
            let _ = stream.write_all(&response);
            let _ = stream.flush();
        }
    });
    (addr, log)
}

/// A parquet file with a `text` (string) and a `label` (int64) column, `group` rows per
/// row group, as the hub's dataset files are.
pub fn text_parquet(path: &Path, rows: &[&str], group: usize) {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message schema { REQUIRED BYTE_ARRAY text (UTF8); REQUIRED INT64 label; }",
        )
        .unwrap(),
    );
    let file = std::fs::File::create(path).unwrap();
    let mut w =
        SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build()))
            .unwrap();
    for chunk in rows.chunks(group.max(1)) {
        let mut rg = w.next_row_group().unwrap();
        let values: Vec<ByteArray> = chunk.iter().map(|s| ByteArray::from(*s)).collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
        let labels: Vec<i64> = (0..chunk.len() as i64).map(|i| i % 2).collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(&labels, None, None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    w.close().unwrap();
}

/// The real binary with extra environment variables.
pub fn gptdash_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gptdash"));
    cmd.current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
        .env("HOME", dir)
        .env("COLUMNS", "120")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("XDG_DATA_HOME")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the gptdash binary runs")
}
