//! zenoh key expressions: `reflex/<fleet>/<robot>/{obs,action,transitions,status}` and
//! `reflex/<fleet>/policy`.
//!
//! Every key reflex uses is built here from these constants; no other crate spells a
//! key as a string literal. Fleet and robot names are single key chunks: check them
//! once (e.g. when loading the configuration) with [`validate_name`]; the builders
//! assume valid names.

/// First chunk of every reflex key.
pub const PREFIX: &str = "reflex";

/// Per-robot suffix for [`crate::Observation`]s (robot or simulator → daemon).
pub const OBS: &str = "obs";
/// Per-robot suffix for [`crate::ActionCommand`]s (daemon → actuators or simulator).
pub const ACTION: &str = "action";
/// Per-robot suffix for [`crate::TransitionBatch`]es (daemon → learner).
pub const TRANSITIONS: &str = "transitions";
/// Per-robot suffix for [`crate::Status`] heartbeats (daemon → anyone watching).
pub const STATUS: &str = "status";
/// Per-fleet suffix for [`crate::PolicyUpdate`]s (learner → every daemon of the fleet).
pub const POLICY: &str = "policy";

/// The per-robot suffixes, in a fixed order.
pub const ROBOT_SUFFIXES: [&str; 4] = [OBS, ACTION, TRANSITIONS, STATUS];

/// Longest fleet or robot name accepted by [`validate_name`], in bytes.
pub const MAX_NAME_LEN: usize = crate::ROBOT_ID_CAPACITY;

/// Why a fleet or robot name cannot be a key chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is {len} bytes, longer than {max}")]
    TooLong {
        /// Length in bytes.
        len: usize,
        /// [`MAX_NAME_LEN`].
        max: usize,
    },
    /// The name contains a character that is not allowed in a key chunk.
    #[error("name contains {0:?}; use ASCII letters, digits, '-', '_' and '.'")]
    BadChar(char),
}

/// Checks that `name` can be a fleet or robot name: 1 to [`MAX_NAME_LEN`] bytes of
/// ASCII letters, digits, `-`, `_` and `.`, so it is one zenoh key chunk without
/// wildcards and fits [`crate::RobotId`].
pub fn validate_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() {
        return Err(KeyError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(KeyError::TooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(KeyError::BadChar(c)),
        None => Ok(()),
    }
}

/// The parts of a per-robot key, as returned by [`parse_robot_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RobotKey<'a> {
    /// Fleet name.
    pub fleet: &'a str,
    /// Robot name.
    pub robot: &'a str,
    /// One of [`ROBOT_SUFFIXES`].
    pub suffix: &'a str,
}

/// Splits `reflex/<fleet>/<robot>/<suffix>` into its parts; `None` if `key` is not a
/// per-robot reflex key with a known suffix, or its fleet or robot is not a valid
/// name ([`validate_name`]: a learner keys its per-robot state by it, so an
/// oversized or odd one from the network is refused here). A learner subscribed
/// to [`all_robots_key`] uses this to learn which robot a sample came from.
pub fn parse_robot_key(key: &str) -> Option<RobotKey<'_>> {
    let mut chunks = key.split('/');
    let (prefix, fleet, robot, suffix) = (
        chunks.next()?,
        chunks.next()?,
        chunks.next()?,
        chunks.next()?,
    );
    if chunks.next().is_some()
        || prefix != PREFIX
        || validate_name(fleet).is_err()
        || validate_name(robot).is_err()
        || !ROBOT_SUFFIXES.contains(&suffix)
    {
        return None;
    }
    Some(RobotKey {
        fleet,
        robot,
        suffix,
    })
}

#[cfg(feature = "alloc")]
mod build {
    use super::*;
    use alloc::format;
    use alloc::string::String;

    /// `reflex/<fleet>/<robot>/<suffix>`, with `suffix` one of [`ROBOT_SUFFIXES`].
    pub fn robot_key(fleet: &str, robot: &str, suffix: &str) -> String {
        format!("{PREFIX}/{fleet}/{robot}/{suffix}")
    }

    /// `reflex/<fleet>/*/<suffix>`: the key expression matching one suffix of every
    /// robot of a fleet (the learner subscribes to `all_robots_key(fleet, TRANSITIONS)`).
    pub fn all_robots_key(fleet: &str, suffix: &str) -> String {
        format!("{PREFIX}/{fleet}/*/{suffix}")
    }

    /// `reflex/<fleet>/<robot>/obs`.
    pub fn obs_key(fleet: &str, robot: &str) -> String {
        robot_key(fleet, robot, OBS)
    }

    /// `reflex/<fleet>/<robot>/action`.
    pub fn action_key(fleet: &str, robot: &str) -> String {
        robot_key(fleet, robot, ACTION)
    }

    /// `reflex/<fleet>/<robot>/transitions`.
    pub fn transitions_key(fleet: &str, robot: &str) -> String {
        robot_key(fleet, robot, TRANSITIONS)
    }

    /// `reflex/<fleet>/<robot>/status`.
    pub fn status_key(fleet: &str, robot: &str) -> String {
        robot_key(fleet, robot, STATUS)
    }

    /// `reflex/<fleet>/policy`.
    pub fn policy_key(fleet: &str) -> String {
        format!("{PREFIX}/{fleet}/{POLICY}")
    }
}

#[cfg(feature = "alloc")]
pub use build::*;

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn keys_have_the_documented_shape() {
        assert_eq!(obs_key("lab", "r1"), "reflex/lab/r1/obs");
        assert_eq!(action_key("lab", "r1"), "reflex/lab/r1/action");
        assert_eq!(transitions_key("lab", "r1"), "reflex/lab/r1/transitions");
        assert_eq!(status_key("lab", "r1"), "reflex/lab/r1/status");
        assert_eq!(policy_key("lab"), "reflex/lab/policy");
        assert_eq!(
            all_robots_key("lab", TRANSITIONS),
            "reflex/lab/*/transitions"
        );
    }

    #[test]
    fn robot_keys_parse_back() {
        for suffix in ROBOT_SUFFIXES {
            let key = robot_key("fleet-a", "robot_7", suffix);
            assert_eq!(
                parse_robot_key(&key),
                Some(RobotKey {
                    fleet: "fleet-a",
                    robot: "robot_7",
                    suffix
                })
            );
        }
        assert_eq!(parse_robot_key(&policy_key("lab")), None);
        assert_eq!(parse_robot_key("reflex/lab/r1/unknown"), None);
        assert_eq!(parse_robot_key("other/lab/r1/obs"), None);
        assert_eq!(parse_robot_key("reflex/lab/r1/obs/extra"), None);
        assert_eq!(parse_robot_key("reflex//r1/obs"), None);
        assert_eq!(parse_robot_key("reflex/lab/r 1/obs"), None);
        assert_eq!(parse_robot_key("reflex/lab/r\n1/obs"), None);
        let long = format!(
            "reflex/lab/{}/obs",
            alloc::string::String::from("r").repeat(MAX_NAME_LEN + 1)
        );
        assert_eq!(parse_robot_key(&long), None);
        let longest = format!(
            "reflex/lab/{}/obs",
            alloc::string::String::from("r").repeat(MAX_NAME_LEN)
        );
        assert!(parse_robot_key(&longest).is_some());
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(validate_name("robot-0.a_b"), Ok(()));
        assert_eq!(validate_name(""), Err(KeyError::Empty));
        assert_eq!(validate_name("a/b"), Err(KeyError::BadChar('/')));
        assert_eq!(validate_name("a*"), Err(KeyError::BadChar('*')));
        assert_eq!(validate_name("a b"), Err(KeyError::BadChar(' ')));
        assert!(matches!(
            validate_name(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(KeyError::TooLong { .. })
        ));
        assert_eq!(validate_name(&"x".repeat(MAX_NAME_LEN)), Ok(()));
    }
}
