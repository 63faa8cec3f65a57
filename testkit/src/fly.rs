//! A fake Fly Machines API (Fly cannot be reached from here). It follows the published spec
//! (`fixtures/fly-machines-swagger.json`): request bodies are validated against its
//! definitions — more strictly than Fly, unknown fields are refused, so a typo fails a test —
//! limits are enforced as documented (1 request/s per action with a burst of 3; Get Machine
//! 5/s, burst 10; scoped per app or machine; 429 beyond), and every machine is a real
//! `tcoder-worker` process started with `FLY_MACHINE_ID` and the machine's `env` over the
//! app's secrets. A machine's `files` are written (decoded) into a folder of its own that
//! stands for its root: a file at `/etc/x.toml` is `<folder>/etc/x.toml`, and an `env` value
//! naming a file's guest path names that copy. A machine whose process exits is `stopped`
//! (restart policy "no").

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::fake_server::FakeServer;

pub const APP: &str = "tcoder-test";
pub const TOKEN: &str = "fake-fly-token";

/// One recorded API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub action: &'static str,
    pub scope: String,
    pub at: Instant,
    pub status: u16,
}

#[derive(Debug)]
struct FakeMachine {
    id: String,
    state: String,
    config: Value,
    created_at: String,
    child: Option<Child>,
}

#[derive(Debug)]
struct Buckets {
    tokens: HashMap<(String, String), (f64, Instant)>,
}

struct Inner {
    program: PathBuf,
    secrets: Vec<(String, String)>,
    machines: Vec<FakeMachine>,
    calls: Vec<Call>,
    buckets: Buckets,
    swagger: Value,
    capacity_failures: u32,
    next_id: u64,
    peak_alive: usize,
    /// Where machines' files are written, a folder per machine.
    roots: tempfile::TempDir,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake. Stops (and kills its machines) on drop.
pub struct FakeFly {
    /// Taken on drop: the API stops before the machines are killed, so none is started after.
    server: Option<FakeServer>,
    inner: Shared,
}

impl std::fmt::Debug for FakeFly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeFly")
            .field("addr", &self.server.as_ref().map(FakeServer::addr))
            .finish()
    }
}

impl FakeFly {
    /// `program` is `tcoder-worker`; `secrets` is the environment every machine gets (like Fly
    /// app secrets).
    pub fn start(program: PathBuf, secrets: Vec<(String, String)>) -> FakeFly {
        let swagger_path =
            crate::workspace_root().join("testkit/fixtures/fly-machines-swagger.json");
        let swagger: Value =
            serde_json::from_str(&std::fs::read_to_string(swagger_path).expect("swagger fixture"))
                .expect("swagger JSON");
        let inner = Arc::new(Mutex::new(Inner {
            program,
            secrets,
            machines: Vec::new(),
            calls: Vec::new(),
            buckets: Buckets { tokens: HashMap::new() },
            swagger,
            capacity_failures: 0,
            next_id: 0,
            peak_alive: 0,
            roots: tempfile::Builder::new().prefix("fake-fly-").tempdir().expect("temp dir"),
        }));
        let router = axum::Router::new()
            .route("/v1/apps/{app}/machines", get(list).post(create))
            .route("/v1/apps/{app}/machines/{id}", get(get_machine).delete(destroy))
            .route("/v1/apps/{app}/machines/{id}/start", post(start))
            .route("/v1/apps/{app}/machines/{id}/stop", post(stop_machine))
            .with_state(inner.clone());
        // Machines whose worker exited become `stopped`, as on Fly.
        let watcher = inner.clone();
        let server = FakeServer::start_with("fake fly", router, move || async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                reap_exited(&watcher);
            }
        });
        FakeFly { server: Some(server), inner }
    }

    /// The `api_base` to configure (`http://…/v1`).
    pub fn api_base(&self) -> String {
        format!("http://{}/v1", self.server.as_ref().expect("running").addr())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().expect("fly lock").calls.clone()
    }

    /// Machines by state (destroyed ones included).
    pub fn states(&self) -> HashMap<String, String> {
        reap_exited(&self.inner);
        self.inner
            .lock()
            .expect("fly lock")
            .machines
            .iter()
            .map(|m| (m.id.clone(), m.state.clone()))
            .collect()
    }

    /// Most machines started at once so far.
    pub fn peak_alive(&self) -> usize {
        self.inner.lock().expect("fly lock").peak_alive
    }

    /// The next `n` creates fail with `insufficient_capacity`.
    pub fn fail_next_creates(&self, n: u32) {
        self.inner.lock().expect("fly lock").capacity_failures = n;
    }

    /// The pid of a started machine's process.
    pub fn pid(&self, id: &str) -> Option<u32> {
        let inner = self.inner.lock().expect("fly lock");
        inner.machines.iter().find(|m| m.id == id).and_then(|m| m.child.as_ref().map(Child::id))
    }
}

impl Drop for FakeFly {
    fn drop(&mut self) {
        drop(self.server.take());
        let mut inner = self.inner.lock().expect("fly lock");
        for machine in &mut inner.machines {
            if let Some(mut child) = machine.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Marks machines whose process exited as stopped (or destroyed with `auto_destroy`).
fn reap_exited(shared: &Shared) {
    let mut inner = shared.lock().expect("fly lock");
    for machine in &mut inner.machines {
        let exited = machine.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if exited {
            machine.child = None;
            let auto_destroy = machine.config["auto_destroy"].as_bool().unwrap_or(false);
            machine.state = if auto_destroy { "destroyed" } else { "stopped" }.to_owned();
        }
    }
}

fn error(status: StatusCode, message: &str, code: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message, "status": code })))
}

/// Auth, then the documented per-action rate limit; records the call.
fn admit(
    inner: &mut Inner,
    headers: &HeaderMap,
    action: &'static str,
    scope: &str,
) -> Result<(), (StatusCode, Json<Value>)> {
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    let result = if !authorized {
        Err(error(StatusCode::UNAUTHORIZED, "missing or invalid token", "unauthorized"))
    } else {
        let (rate, burst) = if action == "get" { (5.0, 10.0) } else { (1.0, 3.0) };
        let now = Instant::now();
        let entry = inner
            .buckets
            .tokens
            .entry((action.to_owned(), scope.to_owned()))
            .or_insert((burst, now));
        let tokens = (entry.0 + now.duration_since(entry.1).as_secs_f64() * rate).min(burst);
        if tokens >= 1.0 {
            *entry = (tokens - 1.0, now);
            Ok(())
        } else {
            *entry = (tokens, now);
            Err(error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded", "rate_limited"))
        }
    };
    let status = match &result {
        Ok(()) => 200,
        Err((status, _)) => status.as_u16(),
    };
    inner.calls.push(Call { action, scope: scope.to_owned(), at: Instant::now(), status });
    result
}

fn view(machine: &FakeMachine) -> Value {
    json!({
        "id": machine.id, "name": format!("machine-{}", machine.id), "state": machine.state,
        "region": "iad", "instance_id": format!("01{}", machine.id.to_uppercase()), "private_ip": "fdaa::1",
        "config": machine.config, "created_at": machine.created_at, "updated_at": machine.created_at, "events": [],
    })
}

fn spawn(inner: &Inner, id: &str, config: &Value) -> Option<Child> {
    let mut command = Command::new(&inner.program);
    command
        .envs(inner.secrets.iter().map(|(k, v)| (k, v)))
        .env("FLY_MACHINE_ID", id)
        .env("FLY_APP_NAME", APP)
        .env("FLY_REGION", "iad");
    let files = write_files(inner, id, config)?;
    if let Some(env) = config["env"].as_object() {
        for (k, v) in env {
            let value = v.as_str().unwrap_or_default();
            let local = files.iter().find(|(guest, _)| guest == value).map(|(_, local)| local);
            match local {
                Some(local) => command.env(k, local),
                None => command.env(k, value),
            };
        }
    }
    let stderr = if crate::test_log() { Stdio::inherit() } else { Stdio::null() };
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn().ok()
}

/// Writes the machine's `files` under its root folder: (guest path, local path) of each.
fn write_files(inner: &Inner, id: &str, config: &Value) -> Option<Vec<(String, PathBuf)>> {
    use base64::Engine as _;
    let mut written = Vec::new();
    for file in config["files"].as_array().into_iter().flatten() {
        let guest = file["guest_path"].as_str()?;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(file["raw_value"].as_str()?).ok()?;
        let local = inner.roots.path().join(id).join(guest.trim_start_matches('/'));
        std::fs::create_dir_all(local.parent()?).ok()?;
        std::fs::write(&local, bytes).ok()?;
        written.push((guest.to_owned(), local));
    }
    Some(written)
}

fn note_alive(inner: &mut Inner) {
    let alive = inner.machines.iter().filter(|m| m.state == "started").count();
    inner.peak_alive = inner.peak_alive.max(alive);
}

async fn list(
    State(shared): State<Shared>,
    Path(app): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    reap_exited(&shared);
    let mut inner = shared.lock().expect("fly lock");
    if let Err(e) = admit(&mut inner, &headers, "list", &app) {
        return e;
    }
    let machines: Vec<Value> = inner
        .machines
        .iter()
        .filter(|m| m.state != "destroyed")
        .filter(|m| {
            query
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("metadata.").map(|k| (k, v)))
                .all(|(k, v)| m.config["metadata"][k].as_str() == Some(v))
        })
        .map(view)
        .collect();
    (StatusCode::OK, Json(Value::Array(machines)))
}

async fn create(
    State(shared): State<Shared>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let mut inner = shared.lock().expect("fly lock");
    if let Err(e) = admit(&mut inner, &headers, "create", &app) {
        return e;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "malformed JSON", "invalid");
    };
    let schema = json!({ "$ref": "#/definitions/CreateMachineRequest" });
    if let Err(problem) = validate(&inner.swagger, &schema, &request, "$") {
        if let Some(call) = inner.calls.last_mut() {
            call.status = 400;
        }
        return error(StatusCode::BAD_REQUEST, &problem, "invalid");
    }
    if request["config"]["image"].as_str().is_none_or(str::is_empty) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "config.image is required", "invalid");
    }
    if inner.capacity_failures > 0 {
        inner.capacity_failures -= 1;
        if let Some(call) = inner.calls.last_mut() {
            call.status = 412;
        }
        return error(
            StatusCode::PRECONDITION_FAILED,
            "no capacity available in iad",
            "insufficient_capacity",
        );
    }
    inner.next_id += 1;
    let id = format!("{:014x}", 0x1857_1560_0000_u64 + inner.next_id);
    let config = request["config"].clone();
    let launch = !request["skip_launch"].as_bool().unwrap_or(false);
    let child = if launch { spawn(&inner, &id, &config) } else { None };
    let state = if child.is_some() { "started" } else { "created" };
    let created_at = humantime_now();
    let machine = FakeMachine { id, state: state.to_owned(), config, created_at, child };
    let answer = view(&machine);
    inner.machines.push(machine);
    note_alive(&mut inner);
    (StatusCode::OK, Json(answer))
}

fn humantime_now() -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    // RFC 3339 without the humantime crate: seconds precision is what Fly returns.
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let (y, mo, d) = civil_from_days(days as i64);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

async fn get_machine(
    State(shared): State<Shared>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    reap_exited(&shared);
    let mut inner = shared.lock().expect("fly lock");
    if let Err(e) = admit(&mut inner, &headers, "get", &id) {
        return e;
    }
    match inner.machines.iter().find(|m| m.id == id) {
        Some(machine) => (StatusCode::OK, Json(view(machine))),
        None => error(StatusCode::NOT_FOUND, "machine not found", "not_found"),
    }
}

async fn start(
    State(shared): State<Shared>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    reap_exited(&shared);
    let mut inner = shared.lock().expect("fly lock");
    if let Err(e) = admit(&mut inner, &headers, "start", &id) {
        return e;
    }
    let Some(index) = inner.machines.iter().position(|m| m.id == id && m.state != "destroyed")
    else {
        return error(StatusCode::NOT_FOUND, "machine not found", "not_found");
    };
    let previous = inner.machines[index].state.clone();
    if previous != "started" {
        let config = inner.machines[index].config.clone();
        let child = spawn(&inner, &id, &config);
        inner.machines[index].child = child;
        inner.machines[index].state = "started".into();
        note_alive(&mut inner);
    }
    (StatusCode::OK, Json(json!({ "previous_state": previous, "migrated": false, "new_host": "" })))
}

async fn stop_machine(
    State(shared): State<Shared>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let mut inner = shared.lock().expect("fly lock");
    if let Err(e) = admit(&mut inner, &headers, "stop", &id) {
        return e;
    }
    if !body.is_empty() {
        let Ok(request) = serde_json::from_slice::<Value>(&body) else {
            return error(StatusCode::BAD_REQUEST, "malformed JSON", "invalid");
        };
        if let Err(problem) =
            validate(&inner.swagger, &json!({ "$ref": "#/definitions/StopRequest" }), &request, "$")
        {
            return error(StatusCode::BAD_REQUEST, &problem, "invalid");
        }
    }
    let Some(machine) = inner.machines.iter_mut().find(|m| m.id == id && m.state != "destroyed")
    else {
        return error(StatusCode::NOT_FOUND, "machine not found", "not_found");
    };
    if let Some(child) = &machine.child
        && let Ok(pid) = i32::try_from(child.id())
    {
        // SAFETY: signalling a child this fake spawned.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        machine.state = "stopping".into();
    }
    (StatusCode::OK, Json(json!({ "ok": true })))
}

async fn destroy(
    State(shared): State<Shared>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let mut inner = shared.lock().expect("fly lock");
    if let Err(e) = admit(&mut inner, &headers, "destroy", &id) {
        return e;
    }
    let Some(machine) = inner.machines.iter_mut().find(|m| m.id == id && m.state != "destroyed")
    else {
        return error(StatusCode::NOT_FOUND, "machine not found", "not_found");
    };
    if let Some(mut child) = machine.child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    machine.state = "destroyed".into();
    (StatusCode::OK, Json(json!({ "ok": true })))
}

/// Validates `value` against a Swagger 2.0 schema, refusing properties the spec does not
/// declare. Returns the first problem with its JSON path.
pub fn validate(swagger: &Value, schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/definitions/");
        let target = &swagger["definitions"][name];
        if target.is_null() {
            return Err(format!("{path}: unknown definition {name}"));
        }
        return validate(swagger, target, value, path);
    }
    if let Some(all) = schema["allOf"].as_array() {
        for part in all {
            validate(swagger, part, value, path)?;
        }
        return Ok(());
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{path}: {value} is not one of {allowed:?}"));
    }
    match schema["type"].as_str() {
        Some("object") => {
            let Some(object) = value.as_object() else {
                return Err(format!("{path}: expected an object"));
            };
            let properties = schema["properties"].as_object();
            for (key, item) in object {
                let child = format!("{path}.{key}");
                match (properties.and_then(|p| p.get(key)), schema.get("additionalProperties")) {
                    (Some(property), _) => validate(swagger, property, item, &child)?,
                    (None, Some(additional)) if additional.is_object() => {
                        validate(swagger, additional, item, &child)?
                    }
                    (None, _) => return Err(format!("{child}: not a field of the spec")),
                }
            }
            Ok(())
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                return Err(format!("{path}: expected an array"));
            };
            for (i, item) in items.iter().enumerate() {
                validate(swagger, &schema["items"], item, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        Some("string") if !value.is_string() => Err(format!("{path}: expected a string")),
        Some("integer") if !(value.is_i64() || value.is_u64()) => {
            Err(format!("{path}: expected an integer"))
        }
        Some("number") if !value.is_number() => Err(format!("{path}: expected a number")),
        Some("boolean") if !value.is_boolean() => Err(format!("{path}: expected a boolean")),
        _ => Ok(()),
    }
}
