//! Per-user directories (the `directories` crate) and project paths.
use std::path::PathBuf;

use directories::ProjectDirs;

fn project_dirs() -> Option<ProjectDirs> {
    ProjectDirs::from("", "", "gptdash")
}

/// Where a user's own `config.toml` may live (e.g. `~/.config/gptdash`).
pub(crate) fn config_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().to_path_buf())
}

/// Per-user data (e.g. `~/.local/share/gptdash`): the dashboard's log file.
pub(crate) fn data_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.data_dir().to_path_buf())
}

/// Per-user cache (e.g. `~/.cache/gptdash`): prepared corpora.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.cache_dir().to_path_buf())
}

/// `path` with a leading `~/` (or a lone `~`) replaced by the home directory (the
/// `directories` crate's), as a shell would; other paths as they are.
pub(crate) fn expand_home(path: &str) -> PathBuf {
    let home = || directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
    match path.strip_prefix("~/") {
        Some(rest) => home().map_or_else(|| PathBuf::from(path), |h| h.join(rest)),
        None if path == "~" => home().unwrap_or_else(|| PathBuf::from(path)),
        None => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_tilde_is_the_home_directory() {
        let home = directories::BaseDirs::new()
            .unwrap()
            .home_dir()
            .to_path_buf();
        assert_eq!(expand_home("~/ck/a"), home.join("ck/a"));
        assert_eq!(expand_home("~"), home);
        assert_eq!(expand_home("./x~"), PathBuf::from("./x~"));
        assert_eq!(expand_home("~user/x"), PathBuf::from("~user/x"));
    }
}
