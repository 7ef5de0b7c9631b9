//! The whole fleet loop over ROS 2, inside a private network namespace:
//! `reflex-train fleet --transport ros2` runs the learner (`serve --transport ros2`,
//! which finds robots by DDS discovery), two `reflex-sim serve --transport ros2`
//! robots and their `reflexd` daemons as separate processes. Transitions reach the
//! learner over `~/transitions`, signed policies reach the daemons over
//! `~/policy_update`; it must learn CartPole within the zenoh fleet's budget and
//! lose nothing on the way.
//!
//! The binaries must be built first (`cargo build --bins`).

#[path = "../../trainer/tests/support/mod.rs"]
mod support;

use std::process::Command;

use support::bin;

use reflex_tests::netns;

#[test]
fn fleet_of_two_learns_cartpole_over_ros2() {
    netns::run_inside("inside_netns_fleet_of_two_learns_cartpole_over_ros2");
}

#[test]
#[ignore = "runs inside a network namespace: started by fleet_of_two_learns_cartpole_over_ros2"]
fn inside_netns_fleet_of_two_learns_cartpole_over_ros2() {
    assert!(netns::inside());
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(bin("reflex-train"))
        .args(["fleet", "--transport", "ros2", "--ros-domain", "9"])
        .args(["--env", "cartpole", "--robots", "2"])
        .args(["--max-transitions", "80000", "--rate-hz", "400"])
        .args(["--set", "dqn.net.hidden=[64,64]"])
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("running reflex-train fleet");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "fleet failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a summary line")).expect("JSON");
    eprintln!("{stderr}\n{summary:#}");
    let get = |k: &str| {
        summary[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} in {summary}"))
    };
    assert!(get("eval_mean_return") >= 475.0, "{summary}");
    assert_eq!(summary["robots"], 2);
    // Policies went out over ROS 2 and the daemons loaded them: each robot's last
    // heartbeat (over ROS 2 too) names a policy later than the first.
    assert!(get("policy_version") >= 2.0, "{summary}");
    let learner: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("learner.json")).unwrap())
            .unwrap();
    let robots = learner["robots"]
        .as_array()
        .expect("robots in learner.json");
    assert_eq!(robots.len(), 2, "{learner}");
    for r in robots {
        assert!(
            r["status_policy_version"].as_u64().unwrap() >= 2,
            "a daemon never got a policy update: {r}"
        );
    }
    // Nothing lost.
    assert_eq!(get("lost_in_transit"), 0.0, "{summary}");
    assert_eq!(get("transitions_dropped"), 0.0, "{summary}");
    assert_eq!(
        get("transitions_sent"),
        get("transitions_received"),
        "{summary}"
    );
    assert_eq!(get("decode_errors"), 0.0, "{summary}");
}
