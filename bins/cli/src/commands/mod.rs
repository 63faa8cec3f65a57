//! The client commands: `submit`, `status`, `jobs`, `cancel`, `keys`, `watch`, …

#[cfg(feature = "engine")]
pub(crate) mod compare;
#[cfg(feature = "engine")]
pub(crate) mod compare_ladder;
#[cfg(feature = "engine")]
mod compare_split;
pub(crate) mod dlq;
pub(crate) mod download;
pub(crate) mod follow;
pub(crate) mod jobs;
pub(crate) mod keys;
mod split_equivalence;
pub(crate) mod submit;
pub(crate) mod watch;

use std::path::PathBuf;

use anyhow::Context as _;
use tcoder::config::Settings;

use tcoder::api::Client;

/// How to reach the API: `--api` / `TCODER_API` and `--api-key` / `TCODER_API_KEY`, else the
/// profile `tcoder up` wrote (see `profile`), else `http://<ingest.http_bind>` and the key in
/// `<up.data_dir>/api-key`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApiArgs {
    /// Base URL of the tcoder API.
    #[arg(long, env = "TCODER_API")]
    api: Option<String>,
    /// API key (Bearer token).
    #[arg(long, env = "TCODER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

impl ApiArgs {
    pub(crate) fn client(&self, settings: &Settings) -> anyhow::Result<Client> {
        let profile = crate::profile::for_commands(&settings.up.data_dir);
        let base = self
            .api
            .clone()
            .or_else(|| profile.as_ref().map(|p| p.api.clone()))
            .unwrap_or_else(|| format!("http://{}", settings.ingest.http_bind));
        let key = match self.api_key.clone().or_else(|| profile.map(|p| p.api_key)) {
            Some(key) => key,
            None => {
                let path: PathBuf = settings.up.data_dir.join("api-key");
                std::fs::read_to_string(&path)
                    .with_context(|| format!("no API key: pass --api-key, set TCODER_API_KEY, or run `tcoder up` (which writes {})", path.display()))?
                    .trim()
                    .to_owned()
            }
        };
        Ok(Client::new(&base, &key)?)
    }
}
