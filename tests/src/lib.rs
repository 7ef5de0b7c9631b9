//! reflex-tests: end-to-end scenarios across reflex's crates (and, as they land,
//! across processes: sim ↔ daemon ↔ trainer). The scenarios live in `tests/`;
//! this library holds what they share. It may depend on every crate; nothing
//! depends on it.

/// Writes a freshly initialized CartPole Q-network (DQN spec, hidden layers
/// `hidden`, weights from `seed`) as an ONNX policy file at `path`: a valid policy
/// for reflexd that a test can run without training one.
pub fn write_cartpole_policy(path: &std::path::Path, hidden: &[usize], seed: u64) {
    use reflex_trainer::export::{q_network_onnx, spec_for};
    use reflex_trainer::nn::{NetConfig, QNetwork};
    let env = reflex_sim::make("cartpole").expect("cartpole");
    let spec = spec_for("dqn", "cartpole", env.as_ref());
    let config = NetConfig {
        hidden: hidden.to_vec(),
        ..NetConfig::default()
    };
    let mut rng = reflex_sim::SimRng::seed(seed);
    let net =
        QNetwork::new(&config, 4, 2, 1, &mut rng, &candle_core::Device::Cpu).expect("a Q-network");
    std::fs::write(path, q_network_onnx(&net, &spec).expect("ONNX export"))
        .expect("writing the policy");
}

pub mod netns {
    //! Running a test inside a private network namespace, where DDS may use multicast
    //! without any packet leaving the machine: the test re-executes its own binary
    //! under `unshare -n` (`unshare -rn` when not root) with loopback up, multicast on
    //! and the multicast route on `lo`.

    use std::process::Command;

    /// Set in the environment of the re-executed test.
    pub const INSIDE: &str = "REFLEX_TEST_IN_NETNS";

    /// Whether this process runs inside the namespace [`run_inside`] made.
    pub fn inside() -> bool {
        std::env::var_os(INSIDE).is_some()
    }

    /// Runs the ignored test `name` of this test binary inside a fresh network
    /// namespace and panics with its output if it fails.
    pub fn run_inside(name: &str) {
        let exe = std::env::current_exe().expect("the test binary's path");
        let setup = "ip link set lo up && ip link set lo multicast on && \
                     ip route add 224.0.0.0/4 dev lo && exec \"$0\" \"$@\"";
        let root = is_root();
        let mut cmd = Command::new("unshare");
        cmd.arg(if root { "-n" } else { "-rn" });
        cmd.args(["sh", "-c", setup])
            .arg(&exe)
            .args([
                "--exact",
                name,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INSIDE, "1");
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run `unshare` (util-linux) to make a network namespace: {e}")
        });
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{name} inside a network namespace failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
        println!("{stdout}");
        eprintln!("{stderr}");
    }

    fn is_root() -> bool {
        // /proc/self/status: "Uid:\treal\teffective\t...".
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
            })
            .unwrap_or(false)
    }
}
