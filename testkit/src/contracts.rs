//! Checks of tcoder's contracts with tools nobody here wrote: the `AsyncAPI` CLI (`asyncapi
//! validate`, from npm into `.tools/npm`) for docs/asyncapi.yaml, `openapi-spec-validator` for
//! /openapi.json, and the Python `jsonschema` package for payloads and answers tcoder really
//! sent (`testkit/python/`), all installed by the set-up.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// docs/asyncapi.yaml.
pub fn asyncapi_document() -> PathBuf {
    crate::workspace_root().join("docs/asyncapi.yaml")
}

/// `asyncapi validate <doc>`; its output when it refuses the document.
pub fn validate_document(doc: &Path) -> Result<String, String> {
    let cli = crate::workspace_root().join(".tools/npm/node_modules/.bin/asyncapi");
    // The CLI writes its settings to $HOME and would report usage over the network: both are
    // pointed into a temporary folder and turned off.
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let settings = home.path().join("asyncapi-analytics");
    std::fs::write(
        &settings,
        r#"{"analyticsEnabled":"false","infoMessageShown":"true","userID":"tcoder-tests"}"#,
    )
    .map_err(|e| e.to_string())?;
    let output = Command::new(&cli)
        .args(["validate", "--fail-severity", "error"])
        .arg(doc)
        .env("HOME", home.path())
        .env("ASYNCAPI_METRICS_CONFIG_PATH", &settings)
        .env("CI", "true")
        .output()
        .map_err(|e| format!("run {}: {e} (run scripts/setup.sh)", cli.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() { Ok(text) } else { Err(text) }
}

/// Validates `samples` (`{"subject", "payload"}` or `{"message", "payload"}`) against the
/// document's schemas; the names of the messages they covered.
pub fn check_payloads(doc: &Path, samples: &[Value]) -> Result<Vec<String>, String> {
    let python = crate::workspace_root().join(".tools/venv/bin/python");
    let script = crate::workspace_root().join("testkit/python/asyncapi_payloads.py");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("samples.json");
    std::fs::write(&file, serde_json::to_vec(samples).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let output = Command::new(python)
        .arg(script)
        .arg(doc)
        .arg(&file)
        .output()
        .map_err(|e| format!("run python: {e} (run scripts/setup.sh)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)));
    }
    let report: Value =
        serde_json::from_str(stdout.trim()).map_err(|e| format!("{e}: {stdout}"))?;
    Ok(report["covered"]
        .as_array()
        .map(|names| names.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
        .unwrap_or_default())
}

/// Every message the document defines (`components.messages`), read with a YAML parser
/// nobody here wrote (`PyYAML`).
pub fn message_names(doc: &Path) -> Vec<String> {
    read_yaml(doc, "sorted(d['components']['messages'])")
}

/// Every channel address in the document (`tcoder.events.{job_id}.{kind}`, …).
pub fn channel_addresses(doc: &Path) -> Vec<String> {
    read_yaml(doc, "sorted(c['address'] for c in d['channels'].values())")
}

/// The Python expression `select` over the parsed document `d`, as a list of strings.
fn read_yaml(doc: &Path, select: &str) -> Vec<String> {
    let python = crate::workspace_root().join(".tools/venv/bin/python");
    let script = format!(
        "import json,sys,yaml; d=yaml.safe_load(open(sys.argv[1])); print(json.dumps({select}))"
    );
    let output = Command::new(python).args(["-c", &script]).arg(doc).output().expect("python runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("a JSON list")
}

/// Runs docs/examples/python/producer.py with `args` and `env`; its one JSON line.
pub fn run_producer(args: &[&str], env: &[(&str, &str)]) -> Value {
    let python = crate::workspace_root().join(".tools/venv/bin/python");
    let script = crate::workspace_root().join("docs/examples/python/producer.py");
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "producer.py printed no JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Validates `document` (an OpenAPI JSON document) with `openapi-spec-validator`, and `answers`
/// (`{"method", "path", "status", "content_type", "body"}`) against it with `jsonschema`
/// (`testkit/python/openapi_check.py`); how many operations the document has.
pub fn check_openapi(document: &Value, answers: &[Value]) -> Result<u64, String> {
    let python = crate::workspace_root().join(".tools/venv/bin/python");
    let script = crate::workspace_root().join("testkit/python/openapi_check.py");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (doc, samples) = (dir.path().join("openapi.json"), dir.path().join("answers.json"));
    std::fs::write(&doc, document.to_string()).map_err(|e| e.to_string())?;
    std::fs::write(&samples, Value::from(answers.to_vec()).to_string())
        .map_err(|e| e.to_string())?;
    let output = Command::new(python)
        .arg(script)
        .arg(&doc)
        .arg(&samples)
        .output()
        .map_err(|e| format!("run python: {e} (run scripts/setup.sh)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)));
    }
    let report: Value =
        serde_json::from_str(stdout.trim()).map_err(|e| format!("{e}: {stdout}"))?;
    Ok(report["operations"].as_u64().unwrap_or(0))
}
