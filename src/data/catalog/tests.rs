//! Unit tests of `catalog`.
use super::*;

#[test]
fn the_built_in_catalog_parses_with_the_entries_the_readme_names() {
    let all = parse(CATALOG).unwrap();
    let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
    for n in [
        "small",
        "shakespeare",
        "imdb",
        "tinystories",
        "wikitext-103",
    ] {
        assert!(names.contains(&n), "{names:?}");
    }
    let imdb = find("imdb").unwrap();
    assert_eq!(imdb.repo, "stanfordnlp/imdb");
    assert_eq!(imdb.files.len(), 3);
    assert!(imdb.dedup && imdb.shuffle_seed.is_some());
    assert_eq!(imdb.mode, DataMode::Documents);
    let ts = find("tinystories").unwrap();
    assert_eq!(ts.docs(), DocSplit::Marker("<|endoftext|>".into()));
    assert!(find("imdb").is_some() && find("./imdb").is_none() && find("imdb.txt").is_none());
}

#[test]
fn a_broken_catalog_entry_is_named() {
    let bad = r#"
[[corpus]]
name = "x"
repo = "a/b"
revision = "main"
read = "parquet"
documents = "rows"
mode = "documents"
description = "d"
licence = "l"
text_mb = 1
files = [{ path = "f.parquet", mb = 1 }]
"#;
    let msg = format!("{:#}", parse(bad).unwrap_err());
    assert!(msg.contains("`x`") && msg.contains("column"), "{msg}");
    let twice = format!("{bad}{bad}").replace(
        "read = \"parquet\"",
        "read = \"parquet\"\ncolumn = \"text\"",
    );
    let msg = format!("{:#}", parse(&twice).unwrap_err());
    assert!(msg.contains("twice"), "{msg}");
}

#[test]
fn imdb_cleaning_matches_the_shared_copy() {
    let raw = "A <br /><br />fine\u{96}film\u{85}  \u{92}twas\u{81} good.\n";
    assert_eq!(
        clean(Some(Clean::Imdb), raw),
        "A fine\u{2013}film\u{2026} \u{2019}twas good."
    );
    assert_eq!(clean(None, "a\n b "), "a b");
}

#[test]
fn wikitext_titles_start_articles_and_sections_do_not() {
    assert!(is_article_title(" = Valkyria Chronicles III = \n"));
    assert!(!is_article_title(" = = Gameplay = = \n"));
    assert!(!is_article_title(" The game began development in 2010 .\n"));
}
