//! The client commands: `submit`, `status`, `jobs`, `cancel`, `keys`.

pub(crate) mod compare;
pub(crate) mod dlq;
pub(crate) mod jobs;
pub(crate) mod keys;
pub(crate) mod submit;

use std::path::PathBuf;

use anyhow::Context as _;
use tcoder::config::Settings;

use crate::client::ApiClient;

/// How to reach the API: `--api` / `TCODER_API` (else `http://<ingest.http_bind>`) and
/// `--api-key` / `TCODER_API_KEY` (else the key `tcoder up` wrote to `<up.data_dir>/api-key`).
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
    pub(crate) fn client(&self, settings: &Settings) -> anyhow::Result<ApiClient> {
        let base =
            self.api.clone().unwrap_or_else(|| format!("http://{}", settings.ingest.http_bind));
        let key = match &self.api_key {
            Some(key) => key.clone(),
            None => {
                let path: PathBuf = settings.up.data_dir.join("api-key");
                std::fs::read_to_string(&path)
                    .with_context(|| format!("no API key: pass --api-key, set TCODER_API_KEY, or run `tcoder up` (which writes {})", path.display()))?
                    .trim()
                    .to_owned()
            }
        };
        ApiClient::new(&base, &key)
    }
}
