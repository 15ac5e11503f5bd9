//! Per-user directories (the `directories` crate) and project paths.
use std::path::PathBuf;

use directories::ProjectDirs;

fn project_dirs() -> Option<ProjectDirs> {
    ProjectDirs::from("", "", "gptdash")
}

/// Where a user's own `config.toml` may live (e.g. `~/.config/gptdash`).
pub fn config_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().to_path_buf())
}

/// Per-user data (e.g. `~/.local/share/gptdash`): the dashboard's log file.
pub fn data_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.data_dir().to_path_buf())
}

/// Per-user cache (e.g. `~/.cache/gptdash`): prepared corpora.
pub fn cache_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.cache_dir().to_path_buf())
}
