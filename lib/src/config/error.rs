//! Configuration errors that name the offending key and where its value came from.

use std::path::PathBuf;

/// Why settings could not be loaded. The message always names the key, so an operator can
/// fix the right line (or variable) without reading code.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("config file {} does not exist", path.display())]
    MissingFile { path: PathBuf },
    #[error("config: {0}")]
    Other(String),
}

impl ConfigError {
    pub(super) fn from_figment(error: figment::Error) -> ConfigError {
        let Some(first) = error.into_iter().next() else {
            return ConfigError::Other("unknown error".to_owned());
        };
        let origin = first.metadata.as_ref().map(|meta| {
            let keys: Vec<&str> = first.path.iter().map(String::as_str).collect();
            let profile = first.profile.clone().unwrap_or_default();
            match &meta.source {
                Some(source) => format!("{} {source}", meta.name),
                None => format!("{} {}", meta.name, meta.interpolate(&profile, &keys)),
            }
        });
        let mut message = first.kind.to_string();
        if let figment::error::Kind::UnknownField(field, _) = &first.kind {
            message = format!("unknown key `{field}`");
        }
        if let Some(origin) = origin {
            message = format!("{message} (from {origin})");
        }
        if first.path.is_empty() {
            return ConfigError::Other(message);
        }
        ConfigError::Invalid { key: first.path.join("."), message }
    }
}
