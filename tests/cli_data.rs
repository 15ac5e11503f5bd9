//! `gptdash data` and `--corpus NAME` against a local stand-in for the Hugging Face hub
//! (`HF_ENDPOINT`): downloads, a resumed one, refused ones, offline errors, the `imdb`
//! and `wikitext-103` entries assembled from parquet fixtures, and training on a named
//! corpus. Nothing here needs the internet.
mod common;

use std::path::Path;

use common::*;

fn env<'a>(endpoint: &'a str, hf: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("HF_ENDPOINT", endpoint), ("HF_HOME", hf)]
}

fn cleaned(raw: &str) -> String {
    gptdash::data::catalog::clean(Some(gptdash::data::catalog::Clean::Imdb), raw)
}

#[test]
fn imdb_is_assembled_from_its_parquet_splits_deduplicated_and_shuffled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let train: Vec<String> = (0..30)
        .map(|i| format!("Train review {i}.<br /><br />It was \u{96} fine\u{85}"))
        .collect();
    let test: Vec<String> = (0..20).map(|i| format!("Test review {i}: dull.")).collect();
    // The unsupervised split repeats a train review (an exact duplicate once cleaned).
    let mut unsup: Vec<String> = (0..25).map(|i| format!("Unlabelled review {i}.")).collect();
    unsup.push(train[3].replace("<br /><br />", " "));
    let files = [
        ("plain_text/train-00000-of-00001.parquet", &train, 7),
        ("plain_text/test-00000-of-00001.parquet", &test, 20),
        ("plain_text/unsupervised-00000-of-00001.parquet", &unsup, 10),
    ];
    let mut hub = Vec::new();
    for (path, rows, group) in files {
        let p = d.join("fixture.parquet");
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        text_parquet(&p, &rows, group);
        hub.push(hub_file(path, std::fs::read(&p).unwrap()));
    }
    let (endpoint, log) = serve_hub(vec![("stanfordnlp/imdb", "main", hub)]);
    let hf = d.join("hf").display().to_string();
    let out = gptdash_env(d, &["data", "get", "imdb", "--json"], &env(&endpoint, &hf));
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&out);
    assert!(ev.iter().any(|e| e["stage"] == "download"), "{ev:?}");
    assert!(ev.iter().any(|e| e["stage"] == "verify"), "{ev:?}");
    let last = ev.last().unwrap();
    assert_eq!(last["here"], "ready");
    let path = last["path"][0].as_str().unwrap().to_string();
    // Expected: every split's text in order, cleaned, the first of each duplicate kept,
    // shuffled with SplitMix64(2011).
    let mut want: Vec<String> = Vec::new();
    for raw in train.iter().chain(&test).chain(&unsup) {
        let c = cleaned(raw);
        if !want.contains(&c) {
            want.push(c);
        }
    }
    assert_eq!(want.len(), 75);
    gptdash::rng::SplitMix64::new(2011).shuffle(&mut want);
    let got: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(got, want);
    assert!(got[0] != cleaned(&train[0]), "shuffled");
    assert!(got
        .iter()
        .all(|l| !l.contains("<br") && !l.contains('\u{96}')));
    // Listed as here; its path printed; offline afterwards.
    let out = gptdash_env(d, &["data", "list", "--json"], &env(&endpoint, &hf));
    let imdb = events(&out)
        .into_iter()
        .find(|e| e["name"] == "imdb")
        .unwrap();
    assert_eq!(imdb["here"], "ready", "{imdb}");
    let out = gptdash_env(d, &["data", "path", "imdb"], &env(&endpoint, &hf));
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), path);
    let requests = log.lock().unwrap().len();
    let out = gptdash_env(
        d,
        &["data", "get", "imdb"],
        &[("HF_HOME", &hf), ("HF_HUB_OFFLINE", "1")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(log.lock().unwrap().len(), requests, "nothing fetched again");
}

#[test]
fn wikitext_shards_become_articles() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shard0 = [
        "",
        " = Alpha = \n",
        "",
        " Alpha is a letter . \n",
        " = = History = = \n",
        " It is old . \n",
    ];
    let shard1 = [" = Beta = \n", " Beta follows alpha . \n"];
    let val = [" = Gamma = \n", " Gamma is third . \n"];
    let test = [" = Delta = \n", " Delta is fourth . \n"];
    let mut hub = Vec::new();
    for (name, rows) in [
        ("train-00000-of-00002", &shard0[..]),
        ("train-00001-of-00002", &shard1[..]),
        ("validation-00000-of-00001", &val[..]),
        ("test-00000-of-00001", &test[..]),
    ] {
        let p = d.join("f.parquet");
        text_parquet(&p, rows, 2);
        hub.push(hub_file(
            &format!("wikitext-103-raw-v1/{name}.parquet"),
            std::fs::read(&p).unwrap(),
        ));
    }
    let (endpoint, _log) = serve_hub(vec![("Salesforce/wikitext", "main", hub)]);
    let hf = d.join("hf").display().to_string();
    let out = gptdash_env(d, &["data", "get", "wikitext-103"], &env(&endpoint, &hf));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gptdash_env(d, &["data", "path", "wikitext-103"], &env(&endpoint, &hf));
    let text = std::fs::read_to_string(stdout(&out).trim()).unwrap();
    let articles: Vec<&str> = text.split("\n<|endoftext|>\n").collect();
    assert_eq!(articles.len(), 4, "{text}");
    assert!(articles[0].starts_with("= Alpha =") && articles[0].contains("= = History = ="));
    assert!(articles[1].starts_with("= Beta ="));
    assert!(articles[3].starts_with("= Delta =") && articles[3].trim_end().ends_with("fourth ."));
}

fn stories(n: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "Once upon a time there was a cat called Tom {i}.\nTom liked to play in the sun.\n<|endoftext|>\n"
        ));
    }
    s.into_bytes()
}

fn blob_parts(hf: &Path) -> Vec<std::path::PathBuf> {
    let blobs = hf.join("hub/datasets--roneneldan--TinyStories/blobs");
    std::fs::read_dir(blobs)
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "part"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_interrupted_download_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let train = stories(3000);
    let valid = stories(40);
    let half = (train.len() / 2) as u64;
    let (endpoint, log) = serve_hub(vec![(
        "roneneldan/TinyStories",
        "main",
        vec![
            HubFile {
                path: "TinyStoriesV2-GPT4-train.txt".into(),
                bytes: train.clone(),
                fault: Some(Fault::StallFirst),
            },
            hub_file("TinyStoriesV2-GPT4-valid.txt", valid.clone()),
        ],
    )]);
    let hf_home = d.join("hf");
    let hf = hf_home.display().to_string();
    // The first download stops half-way (the connection hangs); the process is killed.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gptdash"))
        .current_dir(d)
        .env("HOME", d)
        .env("XDG_CONFIG_HOME", d.join("xdg-config"))
        .env("HF_ENDPOINT", &endpoint)
        .env("HF_HOME", &hf)
        .args(["data", "get", "tinystories", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let parts = blob_parts(&hf_home);
        if parts
            .iter()
            .any(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) == half)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no half download in {parts:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Run again: the download resumes from the part file (a Range request from the
    // half), is checked, and the corpus is ready.
    let out = gptdash_env(d, &["data", "get", "tinystories"], &env(&endpoint, &hf));
    assert!(out.status.success(), "{}", stderr(&out));
    let resumed = format!(
        "/datasets/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-train.txt {half}"
    );
    assert!(
        log.lock().unwrap().contains(&resumed),
        "{:?}",
        log.lock().unwrap()
    );
    assert!(blob_parts(&hf_home).is_empty());
    let out = gptdash_env(d, &["data", "path", "tinystories"], &env(&endpoint, &hf));
    let files: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(files.len(), 2);
    assert!(std::fs::read(&files[0]).unwrap() == train);
    assert!(std::fs::read(&files[1]).unwrap() == valid);

    // A cached file damaged since it was checked (the same size, one byte changed) is
    // checked again against the sha256 that names it, deleted and fetched afresh.
    let mut damaged = train.clone();
    damaged[100] ^= 1;
    let blob = std::fs::canonicalize(&files[0]).unwrap();
    std::fs::write(&blob, &damaged).unwrap();
    let out = gptdash_env(
        d,
        &["data", "get", "tinystories", "--json"],
        &env(&endpoint, &hf),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read(&files[0]).unwrap() == train,
        "still damaged: {}",
        stdout(&out)
    );

    // A snapshot entry that leads outside the cache (a link someone made) is not used,
    // and the file it leads to is left as it is.
    let outside = d.join("outside.txt");
    std::fs::write(&outside, "not a story\n").unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    std::os::unix::fs::symlink(&outside, &files[1]).unwrap();
    let out = gptdash_env(d, &["data", "get", "tinystories"], &env(&endpoint, &hf));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("leads outside the cache") && err.contains("outside.txt"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "not a story\n");
    std::fs::remove_file(&files[1]).unwrap();
    let out = gptdash_env(d, &["data", "get", "tinystories"], &env(&endpoint, &hf));
    assert!(out.status.success(), "{}", stderr(&out));

    // And a run trains on it by name, streamed: documents mode from the catalog.
    let out = gptdash_env(
        d,
        &[
            "train",
            "--corpus",
            "tinystories",
            "--max-iters",
            "2",
            "--vocab-size",
            "300",
            "--json",
            "--model",
            "gpt-nano",
            "--block-size",
            "16",
            "--batch-size",
            "4",
            "--device",
            "cpu",
        ],
        &[("HF_HOME", &hf), ("HF_HUB_OFFLINE", "1")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&out);
    let start = ev.iter().find(|e| e["event"] == "start").unwrap();
    assert_eq!(start["corpus_name"], "tinystories", "{start}");
    assert_eq!(start["mode"], "documents", "{start}");
    assert_eq!(
        start["train_sentences"].as_u64().unwrap() + start["test_sentences"].as_u64().unwrap(),
        3040
    );
}

#[test]
fn a_file_that_does_not_match_the_hubs_record_is_refused_and_deleted() {
    for (fault, needle) in [
        (Fault::WrongHash, "sha256"),
        (Fault::WrongSize, "bytes, the hub records"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (endpoint, _log) = serve_hub(vec![(
            "roneneldan/TinyStories",
            "main",
            vec![
                HubFile {
                    path: "TinyStoriesV2-GPT4-train.txt".into(),
                    bytes: stories(50),
                    fault: Some(fault),
                },
                hub_file("TinyStoriesV2-GPT4-valid.txt", stories(5)),
            ],
        )]);
        let hf_home = d.join("hf");
        let hf = hf_home.display().to_string();
        let out = gptdash_env(d, &["data", "get", "tinystories"], &env(&endpoint, &hf));
        assert_eq!(out.status.code(), Some(2), "{fault:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("refused")
                && err.contains(needle)
                && err.contains(&format!(
                    "{endpoint}/datasets/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-train.txt"
                ))
                && err.contains(".local/share/gptdash/corpora/tinystories/TinyStoriesV2-GPT4-train.txt"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        // The refused download is gone: only hf-hub's lock files stay.
        let blobs = hf_home.join("hub/datasets--roneneldan--TinyStories/blobs");
        let left: Vec<String> = std::fs::read_dir(&blobs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let out = gptdash_env(d, &["data", "path", "tinystories"], &env(&endpoint, &hf));
        assert_eq!(out.status.code(), Some(1), "not here after a refusal");
    }
}

#[test]
fn offline_errors_name_the_url_the_file_and_where_to_put_it_and_files_put_there_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hf = d.join("hf-empty").display().to_string();
    let url = "datasets/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-train.txt";
    let manual = d.join(".local/share/gptdash/corpora/tinystories");
    for envs in [
        vec![("HF_HOME", hf.as_str()), ("HF_HUB_OFFLINE", "1")],
        vec![
            ("HF_HOME", hf.as_str()),
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ],
    ] {
        for args in [
            &["data", "get", "tinystories"][..],
            &["train", "--corpus", "tinystories", "--max-iters", "1"][..],
        ] {
            let out = gptdash_env(d, args, &envs);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = stderr(&out);
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            assert!(
                err.contains(url)
                    && err.contains("TinyStoriesV2-GPT4-train.txt")
                    && err.contains(
                        &manual
                            .join("TinyStoriesV2-GPT4-train.txt")
                            .display()
                            .to_string()
                    ),
                "{args:?} {envs:?}: {err}"
            );
        }
    }
    // The files put by hand where the message says: used as they are, offline.
    std::fs::create_dir_all(&manual).unwrap();
    std::fs::write(manual.join("TinyStoriesV2-GPT4-train.txt"), stories(30)).unwrap();
    std::fs::write(manual.join("TinyStoriesV2-GPT4-valid.txt"), stories(3)).unwrap();
    let out = gptdash_env(
        d,
        &["data", "get", "tinystories"],
        &[("HF_HOME", &hf), ("HF_HUB_OFFLINE", "1")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&manual.display().to_string()));
    // An unknown name is bad input naming the argument.
    expect_error(
        d,
        &["data", "get", "nope"],
        &["no corpus called `nope`", "imdb"],
    );
}
