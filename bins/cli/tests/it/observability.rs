//! What operators get: metrics that pass promtool, a Prometheus (started by `tcoder up`) that
//! scrapes every service including on-demand workers, alert rules and dashboards that only
//! use exported metrics, and the cost of each job.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{eventually, http_get};

use crate::up::{addr, read_summary, spawn_up, submit_transcodes_a_video_with_the_stacks_key};

/// Runs `promtool` with `args` (and `stdin`), returning whether it succeeded and its output.
fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(testkit::workspace_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/setup.sh (Debian package prometheus)");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Percent-encodes a PromQL expression for a query string.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query against Prometheus' HTTP API: the values of the result vector.
fn query(prometheus: SocketAddr, expr: &str) -> Result<Vec<f64>, String> {
    let (status, body) = http_get(prometheus, &format!("/api/v1/query?query={}", encode(expr)))
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let answer: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let values = answer["data"]["result"]
        .as_array()
        .ok_or_else(|| body.clone())?
        .iter()
        .filter_map(|sample| sample["value"][1].as_str()?.parse().ok())
        .collect();
    Ok(values)
}

/// Every sample and family name in a text exposition.
fn exported_names(text: &str, into: &mut BTreeSet<String>) {
    for line in text.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            into.insert(name.to_owned());
        }
    }
}

/// The `tcoder_…` / `process_…` metric names a query text refers to.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (text[i..].starts_with("tcoder_") || text[i..].starts_with("process_")) {
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |n| i + n);
            names.insert(text[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn prometheus_scrapes_every_service_of_the_stack_and_dashboards_use_only_exported_metrics() {
    let _stack = crate::one_stack_at_a_time();
    let data = tempfile::tempdir().unwrap();
    let (mut up, lines) = spawn_up(
        data.path(),
        &[
            ("TCODER__UP__PROMETHEUS", "true"),
            ("TCODER__UP__PROMETHEUS_BIND", "127.0.0.1:0"),
            ("TCODER__UP__SCRAPE_INTERVAL", "1s"),
        ],
    );
    let summary = read_summary(&lines);
    let prometheus = addr(&summary["prometheus"].0);
    let ingest = addr(&summary["ingest admin"].0);
    let dispatcher = addr(&summary["dispatcher admin"].0);
    // The configuration `tcoder up` wrote is valid.
    let written = data.path().join("prometheus/prometheus.yml");
    let (ok, output) = promtool(&["check", "config", written.to_str().unwrap()], None);
    assert!(ok, "{output}");

    // A job runs through the stack (on a worker the dispatcher starts on demand).
    let job = submit_transcodes_a_video_with_the_stacks_key(data.path(), &summary["api"].0);

    // The cost of the job is in its record: measured usage and the estimate from the prices.
    // The stored files are listed in the manifest beside them (the record has a summary).
    let result: tcoder::jobs::JobResult = serde_json::from_value(job["result"].clone()).unwrap();
    let manifest_key = format!("{}{}", result.prefix, tcoder::jobs::MANIFEST_FILE);
    let manifest_path = data.path().join("objects/tcoder").join(&manifest_key);
    let manifest: tcoder::jobs::JobResult =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert!(
        result.files.is_empty() && result.manifest.as_deref().unwrap().ends_with(&manifest_key)
    );
    assert_eq!(
        (manifest.file_count, result.file_count),
        (manifest.files.len(), manifest.files.len())
    );
    // Every output plus the manifest itself (its size as measured on a first rendering).
    let files: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    let manifest_bytes = std::fs::metadata(&manifest_path).unwrap().len();
    let stored = result.cost.usage.bytes_stored;
    assert!(
        stored >= files + manifest_bytes - 64 && stored <= files + manifest_bytes + 64,
        "{:?}",
        result.cost
    );
    assert_eq!(
        result.cost.usage.put_requests,
        manifest.files.len() as u64 + 1,
        "small files: one PUT each, and one for the manifest"
    );
    let cost = &job["result"]["cost"];
    let cpu = cost["cpu_secs"].as_f64().unwrap();
    let machine = cost["machine_secs"].as_f64().unwrap();
    assert!(cpu > 0.0 && machine > 0.0, "{cost}");
    let prices = &cost["prices"];
    let price = |key: &str| prices[key].as_f64().unwrap();
    let expected = machine * price("machine_second_usd")
        + cpu * price("cpu_second_usd")
        + stored as f64 / 1e9 * price("storage_gb_month_usd") * price("storage_months")
        + (manifest.files.len() + 1) as f64 * price("class_a_operation_usd");
    let estimated = cost["estimated_usd"].as_f64().unwrap();
    assert!(estimated > 0.0 && (estimated - expected).abs() < 1e-12, "{cost}");

    // Workers are discovered through the dispatcher.
    let (status, body) = http_get(dispatcher, "/sd/workers").unwrap();
    assert_eq!(status, 200, "{body}");
    let groups: serde_json::Value = serde_json::from_str(&body).unwrap();
    let worker: SocketAddr =
        groups[0]["targets"][0].as_str().unwrap_or_else(|| panic!("{groups}")).parse().unwrap();

    // Every service's /metrics passes promtool's linter.
    let mut exported = BTreeSet::new();
    for (service, admin) in [("ingest", ingest), ("dispatcher", dispatcher), ("worker", worker)] {
        let (status, text) = http_get(admin, "/metrics").unwrap();
        assert_eq!(status, 200);
        let (ok, output) = promtool(&["check", "metrics"], Some(&text));
        assert!(ok && output.trim().is_empty(), "{service}: promtool check metrics:\n{output}");
        exported_names(&text, &mut exported);
    }
    assert!(exported.contains("tcoder_job_cost_usd_total"), "{exported:?}");

    // Prometheus scraped all three (the worker through discovery) and answers queries about
    // the job: the completed counter, a stage-duration quantile and the cost.
    let completed = r#"sum(tcoder_worker_jobs_total{outcome="completed"})"#;
    eventually(Duration::from_secs(60), || match query(prometheus, completed) {
        Ok(values) if values == [1.0] => Ok(()),
        other => Err(other),
    });
    // Ingest, dispatcher and the worker are all scraped successfully.
    eventually(Duration::from_secs(30), || {
        let (_, body) =
            http_get(prometheus, "/api/v1/query?query=up").map_err(|e| e.to_string())?;
        let answer: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let healthy: BTreeSet<&str> = answer["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["value"][1] == "1")
            .filter_map(|s| s["metric"]["job"].as_str())
            .collect();
        let all = BTreeSet::from(["tcoder-dispatcher", "tcoder-ingest", "tcoder-worker"]);
        if healthy == all { Ok(()) } else { Err(body) }
    });
    let quantile = query(
        prometheus,
        r#"histogram_quantile(0.9, sum by (le) (tcoder_job_stage_duration_seconds_bucket{stage="encode"}))"#,
    )
    .unwrap();
    assert!(
        quantile.len() == 1 && quantile[0] > 0.0 && quantile[0].is_finite(),
        "p90 encode time: {quantile:?}"
    );
    let spent = query(prometheus, "sum(tcoder_job_cost_usd_total)").unwrap();
    assert!(spent.len() == 1 && (spent[0] - estimated).abs() < 1e-9, "{spent:?} vs {estimated}");
    let created = query(prometheus, r#"sum(tcoder_jobs_created_total{preset="hls"})"#).unwrap();
    assert_eq!(created, [1.0]);

    // Dashboards are valid JSON, and they and the alert rules only use exported metrics.
    let root = testkit::workspace_root();
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("deploy/grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let exprs: Vec<&str> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().unwrap())
            .map(|t| t["expr"].as_str().unwrap())
            .collect();
        assert!(!exprs.is_empty(), "{}", path.display());
        for expr in exprs {
            let names = referenced_names(expr);
            assert!(!names.is_empty(), "{}: `{expr}` uses no tcoder metric", path.display());
            for name in names {
                assert!(exported.contains(&name), "{}: `{name}` is not exported", path.display());
            }
            // And Prometheus accepts the expression.
            query(prometheus, expr).unwrap_or_else(|e| panic!("{}: `{expr}`: {e}", path.display()));
        }
        checked += 1;
    }
    assert_eq!(checked, 4, "pipeline, workers, webhooks, cost");
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    for name in referenced_names(&rules) {
        assert!(exported.contains(&name), "alerts.yml: `{name}` is not exported");
    }
    // Prometheus loaded the rules `tcoder up` wrote next to its configuration.
    let (_, rules_api) = http_get(prometheus, "/api/v1/rules").unwrap();
    assert!(rules_api.contains("TcoderJobFailureRatio"), "{rules_api}");

    let (status, in_time) = up.terminate(Duration::from_secs(30)).expect("tcoder up was running");
    assert!(in_time && status.success(), "{status}");
}

#[test]
fn the_shipped_prometheus_files_pass_promtool() {
    for args in [
        &["check", "config", "deploy/prometheus/prometheus.yml"][..],
        &["check", "rules", "deploy/prometheus/alerts.yml"],
        // The alerts fire on the situations they describe (and not otherwise).
        &["test", "rules", "deploy/prometheus/alerts_test.yml"],
    ] {
        let (ok, output) = promtool(args, None);
        assert!(ok, "promtool {args:?}:\n{output}");
    }
    // Every alert has a runbook section in the operations guide.
    let root = testkit::workspace_root();
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    let operations = std::fs::read_to_string(root.join("docs/OPERATIONS.md")).unwrap();
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(
            operations.contains(&format!("### {alert}")),
            "docs/OPERATIONS.md has no runbook for {alert}"
        );
    }
}
