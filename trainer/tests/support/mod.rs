//! Fixtures shared by the multi-process fleet tests: the workspace's binaries, free
//! loopback ports, child processes that are killed on drop, and polling helpers.
//! `tests/tests/fleet_zenoh.rs` (crate reflex-tests, which the trainer's tests cannot
//! depend on) includes this file with `#[path]`.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A binary of the workspace (`reflex-train`, `reflex-sim`, `reflexd`), found next to
/// the running test's executable: `target/<profile>/deps/<test>-<hash>` →
/// `target/<profile>/<name>`. Build them first (`cargo build --bins`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (cargo build --bins)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    reflex_daemon::zenoh_link::free_loopback_port().expect("a free port")
}

/// A child process with its log; killed on drop (a failing test leaves nothing behind).
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it has exited (by itself: nothing here stops it).
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_some()
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("{} exited early ({status}):\n{}", self.name, self.log());
        }
    }

    /// Sends `kill -<sig>` (e.g. "USR1") to the process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {pid}");
    }

    /// SIGKILL: no chance to flush, checkpoint or say goodbye.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "{} survived SIGKILL", self.name);
    }

    /// SIGTERM, wait (bounded), and the exit status with the last line of stdout.
    pub fn stop(mut self) -> (ExitStatus, String, String) {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not stop on SIGTERM:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let last = out.lines().last().unwrap_or_default().to_string();
        (status, last, self.log())
    }

    /// [`Proc::stop`], expecting success and a JSON last line.
    pub fn stop_json(self) -> serde_json::Value {
        let name = self.name.clone();
        let (status, last, log) = self.stop();
        assert!(status.success(), "{name} failed ({status}):\n{log}");
        serde_json::from_str(&last)
            .unwrap_or_else(|e| panic!("{name}: last stdout line {last:?}: {e}\n{log}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("--- {} log ---\n{}", self.name, self.log());
        }
    }
}

/// A test robot's reflexd TOML: 200 Hz, explore mode (ε 0.3, seed 7), signed
/// policies only, small batches and quick spool retries, on zenoh with `zenoh` (the
/// lines of `[transport.zenoh]`: mode, endpoints, scouting).
pub fn robot_toml(
    robot: &str,
    fleet: &str,
    policy: &Path,
    public_key: &str,
    zenoh: &str,
) -> String {
    format!(
        r#"robot_id = "{robot}"
fleet = "{fleet}"
rate_hz = 200.0
status_interval_ms = 100
[policy]
path = "{policy}"
reload_poll_ms = 0
public_key = "{key}"
[mode]
kind = "explore"
seed = 7
epsilon = 0.3
[spool]
retry_ms = 50
[batching]
transitions_per_batch = 16
max_latency_ms = 50
[transport]
kind = "zenoh"
[transport.zenoh]
{zenoh}
"#,
        policy = policy.display(),
        key = public_key.trim(),
    )
}

/// A JSON field as u64 (panics with the value when missing).
pub fn u(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Polls `done` every 50 ms until it holds (panics after `timeout`).
pub fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
