//! Layered, typed, validated settings.
//!
//! Layers, lowest priority first: `config/default.toml` → `config/<service>.toml` (both compiled
//! into the binary, so a worker on a bare machine needs no files) → the `--config` file →
//! `TCODER__<SECTION>__<KEY>` environment variables. Unknown keys are errors (a typo must not be
//! silently ignored), and every value is checked at start; the error names the key and where
//! the bad value came from.
//!
//! This module owns loading and the aggregate [`Settings`]; each section's struct lives next to
//! the code it configures (`events::Config` for NATS, `store::Config` for Redis, …).

mod env;
mod error;
mod services;

use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

pub use self::env::EnvVars;
pub use self::error::ConfigError;
pub use self::services::{
    ApiKeyEntry, Delivery, DispatcherConfig, ImportConfig, IngestConfig, LocalStoreConfig,
    ProviderKind, R2QueueConfig, UpConfig, WorkerConfig,
};

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "TCODER__";

/// The shipped defaults; the single source of every key's default value.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Which program is loading settings; selects the `config/<service>.toml` layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ingest,
    Dispatcher,
    Worker,
    Cli,
}

impl Service {
    /// Every service, e.g. for tests that check each shipped file.
    pub const ALL: [Service; 4] =
        [Service::Ingest, Service::Dispatcher, Service::Worker, Service::Cli];

    /// The service's name as used in file names, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Service::Ingest => "ingest",
            Service::Dispatcher => "dispatcher",
            Service::Worker => "worker",
            Service::Cli => "cli",
        }
    }

    /// The compiled-in `config/<service>.toml`.
    pub fn overrides_toml(self) -> &'static str {
        match self {
            Service::Ingest => include_str!("../../../config/ingest.toml"),
            Service::Dispatcher => include_str!("../../../config/dispatcher.toml"),
            Service::Worker => include_str!("../../../config/worker.toml"),
            Service::Cli => include_str!("../../../config/cli.toml"),
        }
    }
}

/// Every setting of every service. Each binary uses the sections it needs; keeping one shape
/// means one `default.toml` documents everything and `tcoder up` can read the services' ports.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub nats: crate::events::Config,
    pub redis: crate::redis::Config,
    pub s3: crate::s3::Config,
    pub telemetry: crate::telemetry::Config,
    pub admin: crate::admin::Config,
    pub shutdown: crate::shutdown::Config,
    pub ingest: IngestConfig,
    pub dispatcher: DispatcherConfig,
    pub worker: WorkerConfig,
    pub up: UpConfig,
    pub webhooks: crate::webhooks::Config,
}

impl Settings {
    /// Loads the settings a service runs with: the compiled-in layers, the optional `--config`
    /// file, then the process environment.
    pub fn load(service: Service, file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load_from(service, file, EnvVars::from_process())
    }

    /// As [`Settings::load`], with the environment given explicitly (tests use this instead of
    /// mutating the process environment).
    pub fn load_from(
        service: Service,
        file: Option<&Path>,
        env: EnvVars,
    ) -> Result<Settings, ConfigError> {
        let mut figment = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(service.overrides_toml()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile { path: path.to_path_buf() });
            }
            figment = figment.merge(Toml::file(path));
        }
        let settings: Settings = figment.merge(env).extract().map_err(ConfigError::from_figment)?;
        settings.validate()?;
        settings.validate_for(service)?;
        Ok(settings)
    }

    /// Checks that only matter to the program using them: credentials of an integration only
    /// that service holds (the Fly token is the dispatcher's, the Queues token ingest's), so one
    /// shared config file works for every service with secrets set per service.
    pub fn validate_for(&self, service: Service) -> Result<(), ConfigError> {
        match service {
            Service::Ingest => {
                self.ingest.r2_queue.validate_credentials().map_err(|e| e.in_section("ingest"))?;
                self.check_store_exposure()
            }
            Service::Dispatcher if self.dispatcher.provider == ProviderKind::Fly => {
                self.dispatcher.fly.validate().map_err(|e| e.in_section("dispatcher"))
            }
            _ => Ok(()),
        }
    }

    /// The embedded store with the credentials every copy of tcoder ships with gives anyone
    /// who can reach it every tenant's objects: that is only acceptable on loopback.
    fn check_store_exposure(&self) -> Result<(), ConfigError> {
        let store = &self.ingest.local_store;
        if store.enabled && !store.bind.ip().is_loopback() && self.s3.has_shipped_credentials() {
            return Err(ConfigError::Invalid {
                key: "ingest.local_store.bind".to_owned(),
                message: format!(
                    "{} is reachable from other hosts, but [s3] still has the shipped example \
                     credentials: set s3.access_key_id and s3.secret_access_key (tcoder up \
                     generates random ones) or bind to 127.0.0.1",
                    store.bind
                ),
            });
        }
        Ok(())
    }

    /// Checks what types alone cannot: ranges, URLs, names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.nats.validate().map_err(|e| e.in_section("nats"))?;
        self.redis.validate().map_err(|e| e.in_section("redis"))?;
        self.s3.validate().map_err(|e| e.in_section("s3"))?;
        self.telemetry.validate().map_err(|e| e.in_section("telemetry"))?;
        self.admin.validate().map_err(|e| e.in_section("admin"))?;
        self.shutdown.validate().map_err(|e| e.in_section("shutdown"))?;
        self.ingest.validate().map_err(|e| e.in_section("ingest"))?;
        self.dispatcher.validate().map_err(|e| e.in_section("dispatcher"))?;
        self.worker.validate().map_err(|e| e.in_section("worker"))?;
        self.up.validate().map_err(|e| e.in_section("up"))?;
        self.webhooks.validate().map_err(|e| e.in_section("webhooks"))?;
        // Workers send an in-progress ack at every lease renewal (a third of the lease): the
        // broker must not redeliver between two of them.
        if self.nats.jobs_ack_wait <= self.worker.lease_ttl / 3 {
            return Err(ConfigError::Invalid {
                key: "nats.jobs_ack_wait".to_owned(),
                message: format!(
                    "must exceed a third of worker.lease_ttl ({:?})",
                    self.worker.lease_ttl / 3
                ),
            });
        }
        Ok(())
    }
}

/// A value that parsed but is not acceptable; `key` is relative to its section until
/// [`Invalid::in_section`] qualifies it.
#[derive(Debug)]
pub struct Invalid {
    key: String,
    message: String,
}

impl Invalid {
    pub fn new(key: &str, message: impl Into<String>) -> Invalid {
        Invalid { key: key.to_owned(), message: message.into() }
    }

    fn in_section(self, section: &str) -> ConfigError {
        ConfigError::Invalid { key: format!("{section}.{}", self.key), message: self.message }
    }
}

/// A secret setting (keys, tokens): never printed by `Debug`, so logging settings is safe.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

thread_local! {
    /// Set while [`Settings::to_toml_without_secrets`] serializes: every [`Secret`] is written
    /// empty, whichever section holds it (a new secret setting needs no list kept up to date).
    static WITHOUT_SECRETS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = if WITHOUT_SECRETS.get() { "" } else { self.0.as_str() };
        serializer.serialize_str(value)
    }
}

impl Settings {
    /// The effective settings as TOML, secrets included: handed to worker processes started
    /// on this host (written to a file only the owner can read).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("settings serialize to TOML")
    }

    /// A dispatcher's settings as its workers': the worker's NATS user and Redis URL
    /// (`dispatcher.worker_*`) in place of the dispatcher's, when they are set.
    pub fn for_workers(&self) -> Settings {
        let mut settings = self.clone();
        let own = &settings.dispatcher;
        if !own.worker_nats_user.is_empty() {
            settings.nats.user = own.worker_nats_user.clone();
            settings.nats.password = own.worker_nats_password.clone();
        }
        if !own.worker_redis_url.expose().is_empty() {
            settings.redis.url = own.worker_redis_url.expose().to_owned();
        }
        settings
    }

    /// The effective settings as TOML without a credential: every secret empty, the Redis URL
    /// without its user and password, no store keys or API keys. For machines that have
    /// credentials of their own (a Fly app's secrets arrive as environment variables, which
    /// win over the file), so a settings file handed through an API carries none.
    pub fn to_toml_without_secrets(&self) -> String {
        let mut settings = self.clone();
        settings.redis.url = without_userinfo(&settings.redis.url);
        settings.s3.access_key_id = String::new();
        settings.ingest.api_keys = Vec::new();
        WITHOUT_SECRETS.set(true);
        let toml = toml::to_string(&settings);
        WITHOUT_SECRETS.set(false);
        toml.expect("settings serialize to TOML")
    }
}

/// `url` without the `user:password@` of its authority.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// Validation helper: fails when a duration is zero.
pub fn require_positive(key: &str, value: std::time::Duration) -> Result<(), Invalid> {
    if value.is_zero() {
        return Err(Invalid::new(key, "must be greater than zero"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_loads_the_shipped_defaults() {
        for service in Service::ALL {
            let settings = Settings::load_from(service, None, EnvVars::default())
                .unwrap_or_else(|e| panic!("{}: {e}", service.name()));
            assert_eq!(settings.s3.bucket, "tcoder");
        }
    }

    #[test]
    fn service_file_overrides_defaults() {
        let ingest = Settings::load_from(Service::Ingest, None, EnvVars::default()).unwrap();
        let dispatcher =
            Settings::load_from(Service::Dispatcher, None, EnvVars::default()).unwrap();
        assert_ne!(ingest.admin.bind, dispatcher.admin.bind);
    }

    #[test]
    fn environment_overrides_files() {
        let env = EnvVars::from_pairs([("TCODER__NATS__URL", "nats://10.1.2.3:4222")]);
        let settings = Settings::load_from(Service::Worker, None, env).unwrap();
        assert_eq!(settings.nats.url, "nats://10.1.2.3:4222");
    }

    #[test]
    fn bad_environment_value_names_key_and_variable() {
        let env = EnvVars::from_pairs([("TCODER__ADMIN__BIND", "not-an-address")]);
        let err = Settings::load_from(Service::Ingest, None, env).unwrap_err().to_string();
        assert!(err.contains("admin.bind"), "{err}");
        assert!(err.contains("TCODER__ADMIN__BIND"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let env = EnvVars::from_pairs([("TCODER__NATS__URLL", "nats://x")]);
        let err = Settings::load_from(Service::Ingest, None, env).unwrap_err().to_string();
        assert!(err.contains("`nats.urll`"), "{err}");
    }

    #[test]
    fn semantic_validation_names_key() {
        let env = EnvVars::from_pairs([("TCODER__WORKER__CONCURRENCY", "0")]);
        let err = Settings::load_from(Service::Worker, None, env).unwrap_err().to_string();
        assert!(err.contains("worker.concurrency"), "{err}");
    }

    /// What a machine gets over an API carries no credential, whichever setting holds it, and
    /// still loads (its own secrets then arrive from its environment).
    #[test]
    fn settings_without_secrets_carry_no_credential() {
        const WEBHOOKS_KEY: &str =
            "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";
        let secrets = [
            ("TCODER__NATS__PASSWORD", "SECRET-nats"),
            ("TCODER__REDIS__URL", "redis://dispatcher:SECRET-redis@redis.internal:6379/"),
            ("TCODER__S3__ACCESS_KEY_ID", "SECRET-s3-id"),
            ("TCODER__S3__SECRET_ACCESS_KEY", "SECRET-s3-key"),
            ("TCODER__WEBHOOKS__SECRET_KEY", WEBHOOKS_KEY),
            ("TCODER__INGEST__NOTIFICATION_SECRET", "SECRET-notify"),
            ("TCODER__INGEST__PLAYBACK_SECRET", "SECRET-playback"),
            ("TCODER__INGEST__R2_QUEUE__API_TOKEN", "SECRET-queue"),
            ("TCODER__DISPATCHER__FLY__TOKEN", "SECRET-fly"),
            ("TCODER__DISPATCHER__WORKER_NATS_PASSWORD", "SECRET-worker-nats"),
            ("TCODER__DISPATCHER__WORKER_REDIS_URL", "redis://worker:SECRET-wr@redis.internal/"),
        ];
        let settings =
            Settings::load_from(Service::Dispatcher, None, EnvVars::from_pairs(secrets)).unwrap();
        let toml = settings.to_toml_without_secrets();
        assert!(!toml.contains("SECRET") && !toml.contains(WEBHOOKS_KEY), "{toml}");
        assert!(toml.contains("url = \"redis://redis.internal:6379/\""), "{toml}");
        assert!(settings.to_toml().contains("SECRET-nats"), "the full file keeps them");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("worker.toml");
        std::fs::write(&file, &toml).unwrap();
        Settings::load_from(Service::Worker, Some(&file), EnvVars::default()).unwrap();
        assert_eq!(without_userinfo("redis://a:b@h:1/0"), "redis://h:1/0");
        assert_eq!(without_userinfo("redis://h:1/"), "redis://h:1/");
        assert_eq!(without_userinfo("rediss://:p@h/"), "rediss://h/");
    }

    #[test]
    fn effective_settings_round_trip_through_toml() {
        let env = EnvVars::from_pairs([
            ("TCODER__NATS__URL", "nats://10.9.8.7:4222"),
            ("TCODER__S3__SECRET_ACCESS_KEY", "s3cr3t"),
        ]);
        let settings = Settings::load_from(Service::Dispatcher, None, env).unwrap();
        let dir = std::env::temp_dir().join(format!("tcoder-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("effective.toml");
        std::fs::write(&file, settings.to_toml()).unwrap();
        let reloaded =
            Settings::load_from(Service::Worker, Some(&file), EnvVars::default()).unwrap();
        assert_eq!(reloaded.nats.url, "nats://10.9.8.7:4222");
        assert_eq!(reloaded.s3.secret_access_key.expose(), "s3cr3t");
        assert_eq!(reloaded.dispatcher.webhook_schedule, settings.dispatcher.webhook_schedule);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = Settings::load_from(
            Service::Ingest,
            Some(Path::new("/nonexistent/tcoder.toml")),
            EnvVars::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile { .. }));
    }
}
