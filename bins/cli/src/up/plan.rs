//! Where every part of the single-host stack listens, resolved from the settings (port 0 means
//! "pick a free one"), and the environment that points each service at the others.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tcoder::config::{Service, Settings};

/// Addresses and folders of one `tcoder up` run.
#[derive(Debug, Clone)]
pub(crate) struct StackPlan {
    pub data_dir: PathBuf,
    pub nats: SocketAddr,
    pub nats_monitor: SocketAddr,
    pub redis: SocketAddr,
    pub store: SocketAddr,
    pub bucket: String,
    /// The embedded store's credentials (`[s3]`), shown for aws CLI / boto3 users.
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    pub api: SocketAddr,
    pub ingest_admin: SocketAddr,
    pub dispatcher_admin: SocketAddr,
    /// Where Prometheus listens, when `[up] prometheus` is on.
    pub prometheus: Option<SocketAddr>,
    /// Each service's NATS and Redis password (its user is its name); empty: no
    /// authentication (only before [`StackPlan::resolve`]'s caller fills it in).
    pub passwords: Vec<(Service, String)>,
    /// The key sealing webhook secrets, when `tcoder up` made one.
    pub webhook_secret_key: Option<String>,
    /// The NATS password of tenant `local`'s event producer (`producer-local`).
    pub producer_password: Option<String>,
    /// Whether the dispatcher starts worker processes here (`local`), or workers come from
    /// elsewhere (`[dispatcher] provider = "none"`: containers, another host).
    pub local_workers: bool,
}

impl StackPlan {
    /// `cli`, `ingest` and `dispatcher` are the same layers loaded for each program, so each
    /// service's own admin port (config/<service>.toml) is respected.
    pub(crate) fn resolve(
        cli: &Settings,
        ingest: &Settings,
        dispatcher: &Settings,
    ) -> anyhow::Result<StackPlan> {
        let data_dir = absolute(&cli.up.data_dir)?;
        let nats = free_if_zero(nats_addr(&cli.nats.url)?)?;
        let redis = free_if_zero(redis_addr(&cli.redis.url)?)?;
        Ok(StackPlan {
            data_dir,
            nats,
            nats_monitor: free_if_zero(SocketAddr::new(nats.ip(), 0))?,
            redis,
            store: free_if_zero(ingest.ingest.local_store.bind)?,
            bucket: cli.s3.bucket.clone(),
            s3_access_key_id: cli.s3.access_key_id.clone(),
            s3_secret_access_key: cli.s3.secret_access_key.expose().to_owned(),
            api: free_if_zero(ingest.ingest.http_bind)?,
            ingest_admin: free_if_zero(ingest.admin.bind)?,
            dispatcher_admin: free_if_zero(dispatcher.admin.bind)?,
            prometheus: match cli.up.prometheus {
                true => Some(free_if_zero(cli.up.prometheus_bind)?),
                false => None,
            },
            passwords: Vec::new(),
            webhook_secret_key: None,
            producer_password: None,
            // The stack never drives Fly from a laptop: anything but `none` is local workers.
            local_workers: dispatcher.dispatcher.provider != tcoder::config::ProviderKind::None,
        })
    }

    /// The store's address as clients reach it: a wildcard bind is reached on loopback here.
    pub(crate) fn store_endpoint(&self) -> SocketAddr {
        match self.store.ip() {
            ip if ip.is_unspecified() => SocketAddr::new([127, 0, 0, 1].into(), self.store.port()),
            _ => self.store,
        }
    }

    /// `service`'s password, if the stack authenticates.
    pub(crate) fn password(&self, service: Service) -> Option<&str> {
        self.passwords.iter().find(|(s, _)| *s == service).map(|(_, p)| p.as_str())
    }

    /// The Redis URL `service` connects with (its own user).
    pub(crate) fn redis_url(&self, service: Service) -> String {
        match self.password(service) {
            Some(password) => format!("redis://{}:{password}@{}/", service.name(), self.redis),
            None => format!("redis://{}/", self.redis),
        }
    }

    /// `TCODER__*` overrides with `service`'s own NATS user and Redis URL.
    pub(crate) fn credentials_env(&self, service: Service) -> Vec<(String, String)> {
        let mut env = vec![("TCODER__REDIS__URL".to_owned(), self.redis_url(service))];
        if let Some(password) = self.password(service) {
            env.push(("TCODER__NATS__USER".to_owned(), service.name().to_owned()));
            env.push(("TCODER__NATS__PASSWORD".to_owned(), password.to_owned()));
        }
        if service == Service::Dispatcher {
            // The workers it starts hold a worker's permissions, not the dispatcher's.
            let worker = Service::Worker;
            env.push(("TCODER__DISPATCHER__WORKER_REDIS_URL".to_owned(), self.redis_url(worker)));
            if let Some(password) = self.password(worker) {
                env.push(("TCODER__DISPATCHER__WORKER_NATS_USER".to_owned(), worker.name().into()));
                env.push(("TCODER__DISPATCHER__WORKER_NATS_PASSWORD".to_owned(), password.into()));
            }
        }
        env
    }

    /// redis-server's ACL file: no anonymous client; one user per service with its role's
    /// keys (`tcoder::redis::acl`); the operator's `cli` user may do anything.
    pub(crate) fn redis_acl(&self) -> String {
        let users: Vec<(Service, &str)> = self
            .passwords
            .iter()
            .map(|(service, password)| (*service, password.as_str()))
            .collect();
        tcoder::redis::acl::acl_file(&users)
    }

    /// Where `tcoder up` keeps the local API key (read by `tcoder submit`).
    pub(crate) fn api_key_path(&self) -> PathBuf {
        self.data_dir.join("api-key")
    }

    /// `TCODER__*` overrides every service of the stack gets.
    pub(crate) fn shared_env(&self) -> Vec<(String, String)> {
        let objects = self.data_dir.join("objects");
        let scratch = self.data_dir.join("scratch");
        [
            ("TCODER__NATS__URL", format!("nats://{}", self.nats)),
            ("TCODER__S3__ENDPOINT", format!("http://{}", self.store_endpoint())),
            ("TCODER__S3__FORCE_PATH_STYLE", "true".to_owned()),
            ("TCODER__S3__ACCESS_KEY_ID", self.s3_access_key_id.clone()),
            ("TCODER__S3__SECRET_ACCESS_KEY", self.s3_secret_access_key.clone()),
            ("TCODER__INGEST__HTTP_BIND", self.api.to_string()),
            ("TCODER__INGEST__LOCAL_STORE__ENABLED", "true".to_owned()),
            ("TCODER__INGEST__LOCAL_STORE__BIND", self.store.to_string()),
            ("TCODER__INGEST__LOCAL_STORE__DATA_DIR", objects.display().to_string()),
            (
                "TCODER__DISPATCHER__PROVIDER",
                if self.local_workers { "local" } else { "none" }.to_owned(),
            ),
            ("TCODER__WORKER__SCRATCH_DIR", scratch.display().to_string()),
        ]
        .into_iter()
        .chain(self.webhook_secret_key.clone().map(|key| ("TCODER__WEBHOOKS__SECRET_KEY", key)))
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The nats-server configuration: JetStream with `sync_interval: always`, so an
    /// acknowledged publish is on disk (a power cut loses nothing that was acked).
    pub(crate) fn nats_config(&self) -> String {
        format!(
            "# Written by `tcoder up`; see deploy/nats/nats-server.conf for production.\n\
             server_name: tcoder-local\n\
             listen: {}\n\
             http: {}\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n{}",
            self.nats,
            self.nats_monitor,
            self.data_dir.join("nats").display(),
            // One user per service, each allowed only its own subjects; no anonymous client.
            match self.passwords.is_empty() {
                true => String::new(),
                false => {
                    let users: Vec<(Service, &str)> =
                        self.passwords.iter().map(|(s, p)| (*s, p.as_str())).collect();
                    let local = tcoder::jobs::Tenant::parse("local").expect("valid tenant");
                    let producers: Vec<_> = self
                        .producer_password
                        .iter()
                        .map(|p| (local.clone(), p.as_str()))
                        .collect();
                    tcoder::events::permissions::authorization_block_with_producers(
                        &users, &producers,
                    )
                }
            }
        )
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir().context("current directory")?.join(path))
}

/// Port 0 becomes a port that is free now (the child binds it a moment later).
fn free_if_zero(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let listener =
        TcpListener::bind(addr).with_context(|| format!("no free port on {}", addr.ip()))?;
    Ok(listener.local_addr()?)
}

/// The one server of `nats.url` (the stack runs a single node).
fn nats_addr(url: &str) -> anyhow::Result<SocketAddr> {
    if url.contains(',') {
        bail!("nats.url lists several servers; `tcoder up` runs one on this host");
    }
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    host_port(rest, 4222).with_context(|| format!("nats.url `{url}`"))
}

/// The host and port of `redis.url`.
fn redis_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let Some(rest) = url.strip_prefix("redis://") else {
        bail!("redis.url `{url}` must be redis://host:port/ for `tcoder up`");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    host_port(host, 6379).with_context(|| format!("redis.url `{url}`"))
}

fn host_port(authority: &str, default_port: u16) -> anyhow::Result<SocketAddr> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().context("port")?),
        None => (authority, default_port),
    };
    let host = if host == "localhost" { "127.0.0.1" } else { host };
    let ip =
        host.parse().with_context(|| format!("`tcoder up` needs an IP address, not `{host}`"))?;
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_socket_addresses() {
        assert_eq!(nats_addr("nats://127.0.0.1:14222").unwrap().port(), 14222);
        assert_eq!(nats_addr("nats://localhost").unwrap().port(), 4222);
        assert_eq!(redis_addr("redis://127.0.0.1:16379/").unwrap().port(), 16379);
        assert_eq!(redis_addr("redis://:pw@127.0.0.1:7000/0").unwrap().port(), 7000);
        assert!(nats_addr("nats://a:1,nats://b:2").is_err());
        assert!(redis_addr("rediss://x").is_err());
    }

    #[test]
    fn port_zero_is_replaced_by_a_free_port() {
        let addr = free_if_zero("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
    }
}
