//! The optional Prometheus server of the single-host stack, and the scrape configuration it
//! runs with. deploy/prometheus/prometheus.yml is this configuration for the default ports (a
//! test keeps the two identical).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Command;

use super::child::StackChild;

/// The alert rules shipped with tcoder, written next to the generated configuration.
pub(crate) const ALERT_RULES: &str = include_str!("../../../../deploy/prometheus/alerts.yml");

/// A Prometheus configuration scraping ingest and the dispatcher at fixed addresses and the
/// workers through the dispatcher's HTTP service discovery (`/sd/workers`).
pub(crate) fn config(ingest: SocketAddr, dispatcher: SocketAddr, interval: Duration) -> String {
    let interval = format!("{}s", interval.as_secs().max(1));
    format!(
        "# Prometheus for the tcoder single-host stack (`tcoder up` writes this with its ports).\n\
         # Workers start and stop on demand on ports nobody configures: the dispatcher lists the\n\
         # live ones at /sd/workers (HTTP service discovery).\n\
         global:\n\
         \x20 scrape_interval: {interval}\n\
         \x20 evaluation_interval: {interval}\n\
         rule_files:\n\
         \x20 - alerts.yml\n\
         scrape_configs:\n\
         \x20 - job_name: tcoder-ingest\n\
         \x20   static_configs:\n\
         \x20     - targets: [\"{ingest}\"]\n\
         \x20 - job_name: tcoder-dispatcher\n\
         \x20   static_configs:\n\
         \x20     - targets: [\"{dispatcher}\"]\n\
         \x20 - job_name: tcoder-worker\n\
         \x20   http_sd_configs:\n\
         \x20     - url: http://{dispatcher}/sd/workers\n\
         \x20       refresh_interval: {interval}\n"
    )
}

/// Writes the configuration and rules under `<data_dir>/prometheus` and starts Prometheus.
pub(crate) fn start(
    program: &str,
    data_dir: &Path,
    bind: SocketAddr,
    scrape_config: &str,
    log: std::fs::File,
) -> anyhow::Result<StackChild> {
    let dir = data_dir.join("prometheus");
    std::fs::create_dir_all(dir.join("data"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, scrape_config)
        .with_context(|| format!("cannot write {}", config_file.display()))?;
    std::fs::write(dir.join("alerts.yml"), ALERT_RULES)
        .with_context(|| format!("cannot write {}", dir.join("alerts.yml").display()))?;
    let program = if program.is_empty() { "prometheus" } else { program };
    let mut command = Command::new(program);
    command
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={bind}"))
        .stdout(Stdio::null())
        .stderr(log);
    StackChild::spawn("prometheus", command, Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configuration_is_the_generated_one_for_the_default_ports() {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/prometheus.yml"),
        )
        .unwrap();
        let generated = config(
            "127.0.0.1:9101".parse().unwrap(),
            "127.0.0.1:9102".parse().unwrap(),
            Duration::from_secs(15),
        );
        assert_eq!(shipped, generated, "regenerate deploy/prometheus/prometheus.yml");
    }
}
