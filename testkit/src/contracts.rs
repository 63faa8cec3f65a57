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
    let samples = Value::from(samples.to_vec());
    let report =
        run_checker("asyncapi_payloads.py", &[FileArg::Path(doc), FileArg::Json(&samples)])?;
    Ok(report["covered"]
        .as_array()
        .map(|names| names.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
        .unwrap_or_default())
}

/// An argument of a checker script: a file as it is, or JSON written to a temporary file.
enum FileArg<'a> {
    Path(&'a Path),
    Json(&'a Value),
}

/// Runs `testkit/python/<script>` with the venv's Python; its JSON report, or its output when
/// it finds a problem.
fn run_checker(script: &str, args: &[FileArg<'_>]) -> Result<Value, String> {
    let root = crate::workspace_root();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut command = Command::new(root.join(".tools/venv/bin/python"));
    command.arg(root.join("testkit/python").join(script));
    for (i, arg) in args.iter().enumerate() {
        match arg {
            FileArg::Path(path) => command.arg(path),
            FileArg::Json(value) => {
                let file = dir.path().join(format!("{i}.json"));
                std::fs::write(&file, value.to_string()).map_err(|e| e.to_string())?;
                command.arg(file)
            }
        };
    }
    let output = command.output().map_err(|e| format!("run python: {e} (run scripts/setup.sh)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)));
    }
    serde_json::from_str(stdout.trim()).map_err(|e| format!("{e}: {stdout}"))
}

/// What Pillow reads from the animated WebP at `path`: `format`, `width`, `height`, `frames`,
/// `animated`, `loop`, `durations` (ms) and `changes` (how many frames differ from the one
/// before).
pub fn animated_webp(path: &Path) -> Result<Value, String> {
    run_checker("webp_info.py", &[FileArg::Path(path)])
}

/// Every message the document defines (`components.messages`), read with a YAML parser
/// nobody here wrote (`PyYAML`).
pub fn message_names(doc: &Path) -> Vec<String> {
    read_yaml(doc, "sorted(d['components']['messages'])")
}

/// Every channel address in the document (`tcoder.events.{tenant}.{job_id}.{kind}`, …).
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
    let answers = Value::from(answers.to_vec());
    let report =
        run_checker("openapi_check.py", &[FileArg::Json(document), FileArg::Json(&answers)])?;
    Ok(report["operations"].as_u64().unwrap_or(0))
}

/// Generates a Python client from the OpenAPI document at `document` with
/// openapi-python-client (a generator nobody here wrote) and runs
/// `testkit/python/generated_client.py` with it against `api` as the tenant of `key`, uploading
/// `video`; its JSON report.
pub fn run_generated_client(
    document: &Path,
    api: &str,
    key: &str,
    video: &Path,
) -> Result<Value, String> {
    let root = crate::workspace_root();
    let venv = root.join(".tools/venv/bin");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // Its post-hooks (ruff) run from PATH.
    let path = format!("{}:{}", venv.display(), std::env::var("PATH").unwrap_or_default());
    // Images and playlists come back as the generator's File, as application/octet-stream.
    let config = dir.path().join("generator.yaml");
    let overrides = "content_type_overrides:\n  image/jpeg: application/octet-stream\n  \
                     application/vnd.apple.mpegurl: application/octet-stream\n";
    std::fs::write(&config, overrides).map_err(|e| e.to_string())?;
    let generated = Command::new(venv.join("openapi-python-client"))
        .args(["generate", "--meta", "none", "--config"])
        .arg(&config)
        .arg("--path")
        .arg(document)
        .arg("--output-path")
        .arg(dir.path().join("client"))
        .env("PATH", &path)
        .output()
        .map_err(|e| format!("run openapi-python-client: {e} (run scripts/setup.sh)"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&generated.stdout),
        String::from_utf8_lossy(&generated.stderr)
    );
    if !generated.status.success() || !dir.path().join("client/client.py").is_file() {
        return Err(format!("the client was not generated: {said}"));
    }
    let output = Command::new(venv.join("python"))
        .arg(root.join("testkit/python/generated_client.py"))
        .arg(dir.path())
        .args([api, key])
        .arg(video)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)));
    }
    let mut report: Value =
        serde_json::from_str(stdout.trim()).map_err(|e| format!("{e}: {stdout}"))?;
    report["generator_said"] = Value::String(said);
    Ok(report)
}
