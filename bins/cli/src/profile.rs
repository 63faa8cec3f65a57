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
    /// The operator's NATS and Redis access (`tcoder up` writes its `cli` user's), for the
    /// admin commands (`keys`, `dlq`) when no other is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlPlane>,
}

/// Where and as whom the admin commands reach NATS and Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ControlPlane {
    pub nats_url: String,
    pub nats_user: String,
    pub nats_password: String,
    pub redis_url: String,
}

/// `settings` for the admin commands: the profile's control-plane access, unless NATS or
/// Redis were configured explicitly (environment or `--config` file).
pub(crate) fn with_control_plane(
    mut settings: tcoder::config::Settings,
    explicit_config: bool,
) -> tcoder::config::Settings {
    let explicit = |name: &str| std::env::var_os(name).is_some() || explicit_config;
    let Some(control) = path().and_then(|p| read(&p)).and_then(|p| p.control) else {
        return settings;
    };
    if !explicit("TCODER__NATS__URL") {
        settings.nats.url = control.nats_url;
        settings.nats.user = control.nats_user;
        settings.nats.password = tcoder::config::Secret::new(control.nats_password);
    }
    if !explicit("TCODER__REDIS__URL") {
        settings.redis.url = control.redis_url;
    }
    settings
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
        let profile =
            Profile { api: "http://127.0.0.1:8080".into(), api_key: "tk_x".into(), control: None };
        write(&path, &profile).unwrap();
        assert_eq!(read(&path), Some(profile));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
