//! Opening a zenoh session from reflex's own configuration, and small helpers to put
//! and take CDR-encoded `msgs` payloads.
//!
//! Shared by `reflexd` (its zenoh transport) and the learner (`reflex-train serve`):
//! both build a [`ZenohConfig`] from their TOML or CLI and call [`open`]. Defaults are
//! the safe ones for loopback work: peer mode, no multicast scouting, one explicit
//! `connect` endpoint.
//!
//! Everything here uses zenoh's blocking API (`zenoh::Wait`), so no async runtime leaks
//! into callers; zenoh runs its own threads.

use serde::{Deserialize, Serialize};
use zenoh::bytes::{Encoding, ZBytes};
use zenoh::sample::Sample;
use zenoh::Wait;

use reflex_msgs::codec::{self, WireMessage};

use crate::transport::TransportError;

/// The endpoint a default configuration connects to (the learner's default listen
/// endpoint).
pub const DEFAULT_ENDPOINT: &str = "tcp/127.0.0.1:7447";

/// The role a session plays in zenoh's topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZenohMode {
    /// Talks directly to the peers it connects to or that connect to it.
    #[default]
    Peer,
    /// Talks only through the router(s) it connects to (fleets across machines).
    Client,
    /// Routes for clients and peers (a fleet's router; usually `zenohd`).
    Router,
}

impl ZenohMode {
    /// The name zenoh's configuration uses (`"peer"`, `"client"`, `"router"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ZenohMode::Peer => "peer",
            ZenohMode::Client => "client",
            ZenohMode::Router => "router",
        }
    }
}

/// How to open a zenoh session: `[transport.zenoh]` in robot.toml, and the learner's
/// `--listen` / `--connect` options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZenohConfig {
    /// `"peer"` (default), `"client"` (through a router) or `"router"`.
    pub mode: ZenohMode,
    /// Endpoints to listen on, e.g. `["tcp/127.0.0.1:7447"]`. Empty: listen on none
    /// (a peer with empty `listen` only connects out).
    pub listen: Vec<String>,
    /// Endpoints to connect to, e.g. `["tcp/127.0.0.1:7447"]` (default). zenoh keeps
    /// retrying endpoints that are not up yet.
    pub connect: Vec<String>,
    /// Multicast scouting (automatic discovery on the LAN). Off by default: endpoints
    /// are explicit, and tests run on loopback only.
    pub scouting: bool,
}

impl Default for ZenohConfig {
    fn default() -> Self {
        ZenohConfig {
            mode: ZenohMode::Peer,
            listen: Vec::new(),
            connect: vec![DEFAULT_ENDPOINT.to_string()],
            scouting: false,
        }
    }
}

impl ZenohConfig {
    /// Checks what zenoh would otherwise reject at open time with a less clear message.
    pub fn validate(&self) -> Result<(), TransportError> {
        for endpoint in self.listen.iter().chain(&self.connect) {
            if endpoint.trim().is_empty() || !endpoint.contains('/') {
                return Err(TransportError::Other(format!(
                    "zenoh endpoint {endpoint:?} is not of the form <proto>/<address> \
                     (e.g. tcp/127.0.0.1:7447)"
                )));
            }
        }
        if self.mode == ZenohMode::Client && self.connect.is_empty() {
            return Err(TransportError::Other(
                "zenoh client mode needs at least one connect endpoint".into(),
            ));
        }
        if self.listen.is_empty() && self.connect.is_empty() && !self.scouting {
            return Err(TransportError::Other(
                "zenoh config has no listen or connect endpoint and scouting is off: \
                 the session could never reach anyone"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The zenoh configuration this maps to.
    pub fn to_zenoh(&self) -> Result<zenoh::Config, TransportError> {
        self.validate()?;
        let mut cfg = zenoh::Config::default();
        let set = |cfg: &mut zenoh::Config, key: &str, value: String| {
            cfg.insert_json5(key, &value)
                .map_err(|e| TransportError::Other(format!("zenoh config {key} = {value}: {e}")))
        };
        let json_list =
            |list: &[String]| serde_json::to_string(list).unwrap_or_else(|_| "[]".to_string());
        set(&mut cfg, "mode", format!("\"{}\"", self.mode.as_str()))?;
        set(&mut cfg, "listen/endpoints", json_list(&self.listen))?;
        set(&mut cfg, "connect/endpoints", json_list(&self.connect))?;
        set(
            &mut cfg,
            "scouting/multicast/enabled",
            self.scouting.to_string(),
        )?;
        Ok(cfg)
    }
}

/// Opens a session (blocking until zenoh has started; connect endpoints that are not
/// up yet are retried in the background, so this succeeds without a peer).
pub fn open(config: &ZenohConfig) -> Result<zenoh::Session, TransportError> {
    let cfg = config.to_zenoh()?;
    zenoh::open(cfg)
        .wait()
        .map_err(|e| TransportError::Other(format!("opening zenoh session: {e}")))
}

/// A TCP port on 127.0.0.1 that is free now (bound, read, released), for loopback
/// endpoints chosen at run time (`reflex-train fleet`, tests, benchmarks).
///
/// It is drawn at random below the kernel's ephemeral range
/// (`ip_local_port_range`): a port from that range (what binding port 0 gives)
/// can be taken by any process's outgoing connection before the caller binds
/// it, which made a fleet test fail with "address in use" under load. Port 0's
/// answer is the fallback when nothing below the range is free.
pub fn free_loopback_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    const FROM: u16 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > FROM {
        let span = u64::from(ephemeral_low - FROM);
        let mut random = std::collections::hash_map::RandomState::new().build_hasher();
        for attempt in 0..64u64 {
            random.write_u64(attempt);
            let port = FROM + (random.finish() % span) as u16;
            if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                return Ok(listener.local_addr()?.port());
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The encoding a `msgs` type is tagged with: `application/cdr;<DDS type name>`.
pub fn cdr_encoding<T: WireMessage>() -> Encoding {
    Encoding::APPLICATION_CDR.with_schema(T::DDS_TYPE)
}

/// Encodes a `msgs` value as a CDR payload (with its encapsulation header).
pub fn encode_cdr<T: WireMessage>(msg: &T) -> Result<ZBytes, TransportError> {
    codec::encode(msg).map(ZBytes::from).map_err(|e| {
        let what = format!("encoding {}: {e}", T::DDS_TYPE);
        match e {
            reflex_msgs::WireError::TooLarge { .. } => TransportError::TooLarge(what),
            _ => TransportError::Other(what),
        }
    })
}

/// Decodes a sample's payload as a `msgs` value (any zenoh error becomes a string; the
/// caller counts it and drops the message).
pub fn decode_sample<T: WireMessage>(sample: &Sample) -> Result<T, TransportError> {
    let bytes = sample.payload().to_bytes();
    codec::decode(&bytes).map_err(|e| {
        TransportError::Other(format!(
            "decoding {} on {}: {e}",
            T::DDS_TYPE,
            sample.key_expr()
        ))
    })
}

/// Puts one `msgs` value on `key` through the session (for one-off messages; declare a
/// publisher for streams).
pub fn put_cdr<T: WireMessage>(
    session: &zenoh::Session,
    key: &str,
    msg: &T,
) -> Result<(), TransportError> {
    session
        .put(key, encode_cdr(msg)?)
        .encoding(cdr_encoding::<T>())
        .wait()
        .map_err(|e| TransportError::Other(format!("put on {key}: {e}")))
}

/// Publishes one `msgs` value through a declared publisher, tagged as CDR.
pub fn publish_cdr<T: WireMessage>(
    publisher: &zenoh::pubsub::Publisher<'_>,
    msg: &T,
) -> Result<(), TransportError> {
    publisher
        .put(encode_cdr(msg)?)
        .encoding(cdr_encoding::<T>())
        .wait()
        .map_err(|e| TransportError::Other(format!("put on {}: {e}", publisher.key_expr())))
}

/// Whether any subscriber currently matches the publisher's key.
pub fn has_subscribers(publisher: &zenoh::pubsub::Publisher<'_>) -> Result<bool, TransportError> {
    publisher
        .matching_status()
        .wait()
        .map(|s| s.matching())
        .map_err(|e| TransportError::Other(format!("matching status: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_bindable_and_outside_the_ephemeral_range() {
        let low: Option<u16> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        for _ in 0..20 {
            let port = free_loopback_port().unwrap();
            if let Some(low) = low.filter(|&l| l > 10_000) {
                assert!((10_000..low).contains(&port), "{port}");
            }
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }

    #[test]
    fn defaults() {
        let c = ZenohConfig::default();
        assert_eq!(c.mode, ZenohMode::Peer);
        assert!(c.listen.is_empty());
        assert_eq!(c.connect, vec![DEFAULT_ENDPOINT.to_string()]);
        assert!(!c.scouting);
        c.to_zenoh().unwrap();
    }

    #[test]
    fn toml_round_trip_and_unknown_keys() {
        let c: ZenohConfig =
            toml::from_str("mode = \"client\"\nconnect = [\"tcp/127.0.0.1:7000\"]\n").unwrap();
        assert_eq!(c.mode, ZenohMode::Client);
        assert_eq!(c.connect, vec!["tcp/127.0.0.1:7000".to_string()]);
        assert!(toml::from_str::<ZenohConfig>("mdoe = \"peer\"").is_err());
        assert!(toml::from_str::<ZenohConfig>("mode = \"Peer\"").is_err());
    }

    #[test]
    fn refuses_unreachable_and_malformed() {
        let none = ZenohConfig {
            connect: vec![],
            ..ZenohConfig::default()
        };
        assert!(none.validate().is_err());
        let bad = ZenohConfig {
            connect: vec!["127.0.0.1:7447".into()],
            ..ZenohConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
