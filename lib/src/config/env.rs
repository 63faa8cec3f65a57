//! The environment layer: `TCODER__SECTION__KEY=value` → `section.key = value`.
//!
//! A provider of our own rather than `figment::providers::Env` so tests can pass variables
//! explicitly instead of mutating the process environment (which races between threads).

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use super::ENV_PREFIX;

/// A snapshot of `TCODER__*` variables.
#[derive(Debug, Clone, Default)]
pub struct EnvVars {
    vars: Vec<(String, String)>,
}

impl EnvVars {
    /// The `TCODER__*` variables of this process.
    pub fn from_process() -> EnvVars {
        EnvVars::from_pairs(std::env::vars())
    }

    /// Any `(name, value)` pairs; names without the prefix are ignored.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> EnvVars
    where
        K: Into<String>,
        V: Into<String>,
    {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.len() > ENV_PREFIX.len())
            .collect();
        EnvVars { vars }
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_profile: &Profile, keys: &[&str]| {
            format!("{ENV_PREFIX}{}", keys.join("__").to_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut root = Dict::new();
        for (name, raw) in &self.vars {
            let path: Vec<String> =
                name[ENV_PREFIX.len()..].split("__").map(str::to_lowercase).collect();
            let value: Value = raw.parse().unwrap_or_else(|never| match never {});
            insert(&mut root, &path, value);
        }
        Ok(Profile::Default.collect(root))
    }
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [leaf] => {
            dict.insert(leaf.clone(), value);
        }
        [head, rest @ ..] => {
            let child = dict.entry(head.clone()).or_insert_with(|| Value::from(Dict::new()));
            if !matches!(child, Value::Dict(..)) {
                *child = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = child {
                insert(inner, rest, value);
            }
        }
    }
}
