//! Where the client commands find the API: flags, environment, or a profile `tcoder up` wrote.
//! Each stack writes its own, `<data_dir>/cli.toml`, and the per-user profile
//! (`$XDG_CONFIG_HOME/tcoder/cli.toml`, else `~/.config/tcoder/cli.toml`) unless that one
//! belongs to another stack whose data folder still exists — a second stack never silently
//! repoints the CLI. Commands read `TCODER_PROFILE` if set, else the profile of the stack whose
//! data folder is `up.data_dir` (`.data` in the current folder), else the per-user one.

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
    /// The data folder of the stack this profile is for (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
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
    let Some(control) = for_commands(&settings.up.data_dir).and_then(|p| p.control) else {
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

/// The profile the client commands use: `TCODER_PROFILE`, else the stack's in `data_dir`
/// when there is one, else the per-user profile.
pub(crate) fn for_commands(data_dir: &Path) -> Option<Profile> {
    if std::env::var_os("TCODER_PROFILE").is_none()
        && let Some(profile) = read(&of_stack(data_dir))
    {
        return Some(profile);
    }
    path().and_then(|path| read(&path))
}

/// The profile a stack with data in `data_dir` keeps for itself.
pub(crate) fn of_stack(data_dir: &Path) -> PathBuf {
    data_dir.join("cli.toml")
}

/// Whether `tcoder up` for the stack in `data_dir` may write the per-user profile, which now
/// holds `existing`: when it is nobody's yet, already this stack's, or its stack's data folder
/// is gone. Another live stack's profile is left alone.
pub(crate) fn may_claim(existing: Option<&Profile>, data_dir: &Path) -> bool {
    match existing.and_then(|p| p.data_dir.as_deref()) {
        None => true,
        Some(theirs) => theirs == data_dir || !theirs.is_dir(),
    }
}

/// The per-user profile file's path (`TCODER_PROFILE` when set), if a home or config folder
/// is known.
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
        let profile = Profile {
            api: "http://127.0.0.1:8080".into(),
            api_key: "tk_x".into(),
            control: None,
            data_dir: Some(dir.path().join(".data")),
        };
        write(&path, &profile).unwrap();
        assert_eq!(read(&path), Some(profile));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_stack_claims_the_user_profile_only_from_nobody_itself_or_a_stack_that_is_gone() {
        let here = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let of = |dir: Option<&Path>| Profile {
            data_dir: dir.map(Path::to_path_buf),
            ..Profile::default()
        };
        assert!(may_claim(None, here.path()));
        assert!(may_claim(Some(&of(None)), here.path()));
        assert!(may_claim(Some(&of(Some(here.path()))), here.path()));
        // Another stack that still has its data: not repointed.
        assert!(!may_claim(Some(&of(Some(other.path()))), here.path()));
        let gone = other.path().join("removed");
        assert!(may_claim(Some(&of(Some(&gone))), here.path()));
    }
}
