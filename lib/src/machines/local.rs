//! The `local` provider: worker machines are `tcoder-worker` processes on this host, started
//! with the same environment a Fly machine gets. A stopped machine is an exited process that
//! can be started again under the same id.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use super::provider::{MachineProvider, ProviderError, ProviderMachine, ProviderState};
use crate::jobs::now_ms;

#[derive(Debug)]
struct LocalMachine {
    slot: String,
    created_at: u64,
    child: Option<Child>,
}

/// Spawns workers as child processes.
#[derive(Debug)]
pub struct LocalProvider {
    program: PathBuf,
    env: Vec<(String, String)>,
    machines: Mutex<BTreeMap<String, LocalMachine>>,
    counter: Mutex<u64>,
    /// Most machines alive at once so far (what tests and operators check against the cap).
    peak_alive: Mutex<usize>,
    /// Whether workers write their logs to this process's stderr (else they are discarded).
    worker_logs: bool,
    /// Files the workers need for as long as this provider lives (their settings, with
    /// secrets); removed with it.
    _owned: Option<tempfile::TempDir>,
}

impl LocalProvider {
    /// `program` is `tcoder-worker`; `env` is added to every worker's environment.
    pub fn new(program: PathBuf, env: Vec<(String, String)>) -> LocalProvider {
        LocalProvider {
            program,
            env,
            machines: Mutex::default(),
            counter: Mutex::new(0),
            peak_alive: Mutex::new(0),
            worker_logs: true,
            _owned: None,
        }
    }

    /// Keeps `dir` (the workers' settings) until this provider is dropped.
    pub fn owning(mut self, dir: tempfile::TempDir) -> LocalProvider {
        self._owned = Some(dir);
        self
    }

    /// Whether workers log to this process's stderr (`[dispatcher] local_worker_logs`).
    pub fn with_worker_logs(mut self, inherit: bool) -> LocalProvider {
        self.worker_logs = inherit;
        self
    }

    pub fn peak_alive(&self) -> usize {
        *self.peak_alive.lock().expect("lock")
    }

    /// The worker process of a running machine.
    pub fn pid(&self, id: &str) -> Option<u32> {
        let mut machines = self.machines.lock().expect("lock");
        let machine = machines.get_mut(id)?;
        if Self::state(machine) != ProviderState::Started {
            return None;
        }
        machine.child.as_ref().map(Child::id)
    }

    /// Machines running now.
    pub async fn list_alive(&self) -> usize {
        self.list().await.map(|m| m.iter().filter(|m| m.state.is_alive()).count()).unwrap_or(0)
    }

    /// How many machines were ever created.
    pub fn created(&self) -> u64 {
        *self.counter.lock().expect("lock")
    }

    fn spawn(&self, id: &str) -> Result<Child, ProviderError> {
        let mut command = Command::new(&self.program);
        // The settings file it is given holds the worker's effective settings (its own NATS
        // user and Redis URL among them); the dispatcher's own TCODER__* overrides must not
        // leak into the worker and replace them.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TCODER__") {
                command.env_remove(name);
            }
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("TCODER__WORKER__MACHINE_ID", id)
            .env("TCODER__ADMIN__BIND", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if self.worker_logs { Stdio::inherit() } else { Stdio::null() });
        // SAFETY: prctl in the child before exec; workers die with the dispatcher.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
                Ok(())
            });
        }
        command.spawn().map_err(|e| {
            ProviderError::Permanent(format!("cannot start {}: {e}", self.program.display()))
        })
    }

    fn state(machine: &mut LocalMachine) -> ProviderState {
        let running =
            machine.child.as_mut().is_some_and(|child| child.try_wait().ok().flatten().is_none());
        if running { ProviderState::Started } else { ProviderState::Stopped }
    }

    fn note_alive(&self, machines: &mut BTreeMap<String, LocalMachine>) {
        let alive =
            machines.values_mut().map(Self::state).filter(|s| *s == ProviderState::Started).count();
        let mut peak = self.peak_alive.lock().expect("lock");
        *peak = (*peak).max(alive);
    }
}

#[async_trait::async_trait]
impl MachineProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn create(&self, slot: &str) -> Result<ProviderMachine, ProviderError> {
        let mut machines = self.machines.lock().expect("lock");
        if let Some((id, machine)) = machines.iter_mut().find(|(_, m)| m.slot == slot) {
            let state = Self::state(machine);
            return Ok(ProviderMachine {
                id: id.clone(),
                state,
                slot: Some(slot.to_owned()),
                created_at: machine.created_at,
            });
        }
        let id = {
            let mut counter = self.counter.lock().expect("lock");
            *counter += 1;
            format!("local-{}-{}", std::process::id(), *counter)
        };
        let child = self.spawn(&id)?;
        let created_at = now_ms();
        machines.insert(
            id.clone(),
            LocalMachine { slot: slot.to_owned(), created_at, child: Some(child) },
        );
        self.note_alive(&mut machines);
        Ok(ProviderMachine {
            id,
            state: ProviderState::Started,
            slot: Some(slot.to_owned()),
            created_at,
        })
    }

    async fn start(&self, id: &str) -> Result<(), ProviderError> {
        let mut machines = self.machines.lock().expect("lock");
        let machine = machines.get_mut(id).ok_or_else(|| ProviderError::NotFound(id.to_owned()))?;
        if Self::state(machine) == ProviderState::Started {
            return Ok(());
        }
        if let Some(mut old) = machine.child.take() {
            let _ = old.wait();
        }
        machine.child = Some(self.spawn(id)?);
        self.note_alive(&mut machines);
        Ok(())
    }

    async fn stop(&self, id: &str) -> Result<(), ProviderError> {
        let mut machines = self.machines.lock().expect("lock");
        let machine = machines.get_mut(id).ok_or_else(|| ProviderError::NotFound(id.to_owned()))?;
        // A child that exited may already be reaped (by `try_wait` in `state`), and its pid
        // reused by another process: only a child `try_wait` finds unreaped is signalled. It
        // cannot be reaped in between: every wait on it happens under the lock we hold.
        if let Some(child) = machine.child.as_mut()
            && matches!(child.try_wait(), Ok(None))
            && let Ok(pid) = i32::try_from(child.id())
        {
            // SAFETY: signalling a child we spawned and have not reaped (checked above, under
            // the lock): the pid is still its own, at worst a zombie's.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        Ok(())
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        let mut machines = self.machines.lock().expect("lock");
        let mut machine =
            machines.remove(id).ok_or_else(|| ProviderError::NotFound(id.to_owned()))?;
        if let Some(mut child) = machine.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ProviderMachine>, ProviderError> {
        let mut machines = self.machines.lock().expect("lock");
        self.note_alive(&mut machines);
        Ok(machines
            .iter_mut()
            .map(|(id, m)| ProviderMachine {
                id: id.clone(),
                state: Self::state(m),
                slot: Some(m.slot.clone()),
                created_at: m.created_at,
            })
            .collect())
    }
}

/// How long workers get to drain (finish or release their jobs) after SIGTERM when the
/// provider goes away, before they are killed. A worker releases its jobs 2 s before its own
/// drain deadline, so this is a little longer than the default drain deadline.
const WORKER_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(40);

impl Drop for LocalProvider {
    /// The dispatcher is stopping: every worker gets SIGTERM and the grace period to release
    /// or finish its job (a SIGKILL would leave its job to the lease and the reconciler);
    /// whatever is still running then is killed.
    fn drop(&mut self) {
        let machines = self.machines.get_mut().map(std::mem::take).unwrap_or_default();
        let mut children: Vec<Child> =
            machines.into_values().filter_map(|mut m| m.child.take()).collect();
        for child in &mut children {
            if matches!(child.try_wait(), Ok(None))
                && let Ok(pid) = i32::try_from(child.id())
            {
                // SAFETY: a child we spawned and have not reaped (checked just above; we own
                // it now, nobody else waits for it).
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = std::time::Instant::now() + WORKER_STOP_GRACE;
        while std::time::Instant::now() < deadline
            && children.iter_mut().any(|c| matches!(c.try_wait(), Ok(None)))
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for mut child in children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}
