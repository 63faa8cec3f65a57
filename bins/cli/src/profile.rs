//! Where the client commands find the API: flags, environment, or the per-user profile
//! `tcoder up` writes (`$XDG_CONFIG_HOME/tcoder/cli.toml`, else `~/.config/tcoder/cli.toml`;
//! `TCODER_PROFILE` names another file), so `tcoder submit` works from any directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The profile: the API's URL and key, and the store's address and credentials (for aws CLI
/// or boto3 users, printed by `tcoder up`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Profile {
    pub api: String,
    pub api_key: String,
}

/// The profile file's path, if a home or config folder is known.
pub(crate) fn path() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("TCODER_PROFILE") {
        return Some(PathBuf::from(explicit));
    }
    let base =
        std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("tcoder").join("cli.toml"))
}

/// The profile at `path`, if there is a readable one.
pub(crate) fn read(path: &Path) -> Option<Profile> {
    toml::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Writes `profile` to `path`, readable only by its owner (it holds a key).
pub(crate) fn write(path: &Path, profile: &Profile) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = toml::to_string(profile).map_err(std::io::Error::other)?;
    write_private(path, &text)
}

/// Writes `contents` to `path` with mode 0600 (keys, profiles).
pub(crate) fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_round_trips_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tcoder/cli.toml");
        let profile = Profile { api: "http://127.0.0.1:8080".into(), api_key: "tk_x".into() };
        write(&path, &profile).unwrap();
        assert_eq!(read(&path), Some(profile));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
