//! Policy hot-swap: new policies are verified, loaded and validated on the swap
//! thread, then handed to the control thread, which swaps them in between two ticks.
//!
//! A policy arrives as a `PolicyUpdate` (from the learner) or as new contents of the
//! policy file (polled by [`FileWatcher`]). Before the control thread ever sees it:
//!
//! 1. an update's integrity is checked: versions agree, `onnx_sha256` matches the
//!    bytes (`PolicyUpdate::validate`);
//! 2. with a public key configured, the ed25519 signature over
//!    `PolicyUpdate::signing_message()` (domain, version, sha256) must verify
//!    (strict verification); unsigned or wrongly signed updates are refused;
//! 3. updates must be newer than every policy accepted before (a replayed, validly
//!    signed old policy cannot roll a robot back, even after an operator rolled it
//!    back by file);
//! 4. the bytes are loaded by the [`Loader`] (the ONNX runtime validates the graph);
//! 5. the loaded spec must validate, match the update's version, and be compatible
//!    with the running one (same observation dimension, same action space: the safety
//!    layer was built for it);
//! 6. a probe step on a neutral observation must give finite output.
//!
//! A refusal is logged and counted, and the old policy keeps running. The file is a
//! local, trusted operator action: it is not signed, but steps 4–6 apply.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::{Signature, VerifyingKey};
use reflex_msgs::{ActionSpace, PolicyError, PolicySpec, PolicyUpdate};

use crate::actor::{Actor, ActorError, ActorOutput, Loader};
use crate::transport::{PolicyMessage, PolicySource};

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The update is inconsistent (hash mismatch, version mismatch, signature length).
    #[error("policy update v{version} refused: {source}")]
    Integrity {
        /// The update's version.
        version: u64,
        /// What is wrong.
        source: PolicyError,
    },
    /// A key is configured but the update carries no signature.
    #[error("policy update v{version} refused: unsigned, and a public key is configured")]
    Unsigned {
        /// The update's version.
        version: u64,
    },
    /// No key is configured, and unsigned updates are not accepted.
    #[error(
        "policy update v{version} refused: no policy.public_key is configured to check its \
         signature (set it to the learner's learner.pub, or set policy.accept_unsigned = true \
         to accept updates checked by sha256 only)"
    )]
    NoKey {
        /// The update's version.
        version: u64,
    },
    /// The signature does not verify under the configured key.
    #[error("policy update v{version} refused: bad ed25519 signature")]
    BadSignature {
        /// The update's version.
        version: u64,
    },
    /// The update is not newer than the running policy.
    #[error("policy update v{version} refused: not newer than v{current}")]
    NotNewer {
        /// The update's version.
        version: u64,
        /// The last accepted version.
        current: u64,
    },
    /// The runtime could not load the bytes.
    #[error("policy {origin} refused: cannot load: {source}")]
    Load {
        /// Where it came from.
        origin: String,
        /// The runtime's error.
        source: ActorError,
    },
    /// The loaded policy's spec is invalid.
    #[error("policy {origin} refused: invalid spec: {source}")]
    Spec {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        source: PolicyError,
    },
    /// The loaded policy does not fit the running one.
    #[error("policy {origin} refused: {message}")]
    Incompatible {
        /// Where it came from.
        origin: String,
        /// What differs.
        message: String,
    },
    /// The probe step failed or gave non-finite output.
    #[error("policy {origin} refused: probe step: {message}")]
    Probe {
        /// Where it came from.
        origin: String,
        /// What happened.
        message: String,
    },
}

/// The configured public key is not a valid ed25519 point.
#[derive(Debug, thiserror::Error)]
#[error("policy.public_key is not a valid ed25519 public key")]
pub struct BadKey;

/// Checks `PolicyUpdate` integrity and signatures.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: Option<VerifyingKey>,
    accept_unsigned: bool,
}

impl Verifier {
    /// A verifier that requires updates signed by `public_key`.
    pub fn new(public_key: [u8; 32]) -> Result<Self, BadKey> {
        let key = VerifyingKey::from_bytes(&public_key).map_err(|_| BadKey)?;
        Ok(Self {
            key: Some(key),
            accept_unsigned: false,
        })
    }

    /// A verifier without a key: it accepts updates checked by sha256 only
    /// when `accept_unsigned`, and refuses every update otherwise.
    pub fn without_key(accept_unsigned: bool) -> Self {
        Self {
            key: None,
            accept_unsigned,
        }
    }

    /// The verifier `[policy]` asks for: its key, else `accept_unsigned`.
    pub fn from_config(policy: &crate::config::PolicyConfig) -> Result<Self, BadKey> {
        match policy.public_key_bytes().map_err(|_| BadKey)? {
            Some(key) => Self::new(key),
            None => Ok(Self::without_key(policy.accept_unsigned)),
        }
    }

    /// Whether a key is configured.
    pub fn requires_signature(&self) -> bool {
        self.key.is_some()
    }

    /// Steps 1 and 2: integrity, and the signature when a key is configured.
    pub fn verify(&self, update: &PolicyUpdate) -> Result<(), SwapError> {
        let version = update.policy_version;
        update
            .validate()
            .map_err(|source| SwapError::Integrity { version, source })?;
        let Some(key) = &self.key else {
            return if self.accept_unsigned {
                Ok(())
            } else {
                Err(SwapError::NoKey { version })
            };
        };
        let signature = update.signature().ok_or(SwapError::Unsigned { version })?;
        key.verify_strict(&update.signing_message(), &Signature::from_bytes(signature))
            .map_err(|_| SwapError::BadSignature { version })
    }
}

/// What a new policy must agree with: the running policy's observation dimension and
/// action space.
#[derive(Debug, Clone, PartialEq)]
pub struct Compat {
    /// Observation dimension.
    pub obs_dim: usize,
    /// Action space (bounds included).
    pub action_space: ActionSpace,
}

impl Compat {
    /// What `spec` requires.
    pub fn of(spec: &PolicySpec) -> Self {
        Self {
            obs_dim: spec.observation_space.dim(),
            action_space: spec.action_space.clone(),
        }
    }
}

/// Verifies, loads and validates offered policies (steps 1–6).
pub struct Validator {
    verifier: Verifier,
    loader: Loader,
    compat: Compat,
    /// Newest version accepted so far (updates must be newer).
    current_version: u64,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("verifier", &self.verifier)
            .field("compat", &self.compat)
            .field("current_version", &self.current_version)
            .finish_non_exhaustive()
    }
}

impl Validator {
    /// A validator for policies replacing one with `running`'s spec.
    pub fn new(verifier: Verifier, loader: Loader, running: &PolicySpec) -> Self {
        Self {
            verifier,
            loader,
            compat: Compat::of(running),
            current_version: running.policy_version,
        }
    }

    /// The newest version accepted so far (a rollback by file keeps it).
    pub fn current_version(&self) -> u64 {
        self.current_version
    }

    /// Verifies, loads and validates `message`; on success the actor is ready to be
    /// swapped in (its recurrent state reset) and becomes the current version.
    pub fn validate(&mut self, message: &PolicyMessage) -> Result<Box<dyn Actor>, SwapError> {
        let (origin, bytes, update_version) = match message {
            PolicyMessage::Update(update) => {
                self.verifier.verify(update)?;
                if update.policy_version <= self.current_version {
                    return Err(SwapError::NotNewer {
                        version: update.policy_version,
                        current: self.current_version,
                    });
                }
                (
                    format!("update v{}", update.policy_version),
                    update.onnx.as_slice(),
                    Some(update.policy_version),
                )
            }
            PolicyMessage::File { path, bytes } => {
                (format!("file {}", path.display()), bytes.as_slice(), None)
            }
        };
        let mut actor = (self.loader)(bytes).map_err(|source| SwapError::Load {
            origin: origin.clone(),
            source,
        })?;
        let spec = actor.spec().clone();
        spec.validate().map_err(|source| SwapError::Spec {
            origin: origin.clone(),
            source,
        })?;
        let incompatible = |message: String| SwapError::Incompatible {
            origin: origin.clone(),
            message,
        };
        if let Some(version) = update_version {
            if actor.version() != version {
                return Err(incompatible(format!(
                    "the ONNX metadata says v{} but the update says v{version}",
                    actor.version()
                )));
            }
        }
        let compat = Compat::of(&spec);
        if compat.obs_dim != self.compat.obs_dim {
            return Err(incompatible(format!(
                "observation dimension {} differs from the running policy's {}",
                compat.obs_dim, self.compat.obs_dim
            )));
        }
        if compat.action_space != self.compat.action_space {
            return Err(incompatible(format!(
                "action space {:?} differs from the running policy's {:?}",
                compat.action_space, self.compat.action_space
            )));
        }
        probe(actor.as_mut(), &spec).map_err(|message| SwapError::Probe {
            origin: origin.clone(),
            message,
        })?;
        actor.reset();
        // An operator's file may roll the robot back to an older version; the
        // updates it must be newer than stay the newest accepted, or an old,
        // validly signed update could be replayed after the rollback.
        self.current_version = self.current_version.max(actor.version());
        Ok(actor)
    }
}

/// One step on a neutral observation (each dimension's midpoint where bounded, else
/// 0); the output must be finite and of the right shape.
fn probe(actor: &mut dyn Actor, spec: &PolicySpec) -> Result<(), String> {
    let space = &spec.observation_space;
    let obs: Vec<f32> = space
        .low
        .iter()
        .zip(&space.high)
        .map(|(&l, &h)| {
            let mid = (f64::from(l) + f64::from(h)) / 2.0;
            if mid.is_finite() && l.is_finite() && h.is_finite() {
                mid as f32
            } else {
                0.0
            }
        })
        .collect();
    let out = actor.step(&obs).map_err(|e| e.to_string())?;
    match (out, &spec.action_space) {
        (ActorOutput::Discrete { action, q }, ActionSpace::Discrete { n }) => {
            if action >= *n || q.len() != *n as usize {
                return Err(format!(
                    "discrete output {action} with {} Q-values for n = {n}",
                    q.len()
                ));
            }
            if q.iter().any(|v| !v.is_finite()) {
                return Err("non-finite Q-values".into());
            }
        }
        (ActorOutput::Continuous { action }, ActionSpace::Box(bounds)) => {
            if action.len() != bounds.dim() {
                return Err(format!(
                    "{} action values for dimension {}",
                    action.len(),
                    bounds.dim()
                ));
            }
            if action.iter().any(|v| !v.is_finite()) {
                return Err("non-finite action".into());
            }
        }
        _ => return Err("output kind does not match the action space".into()),
    }
    Ok(())
}

/// Polls the policy file's metadata and yields its bytes when its contents change.
#[derive(Debug)]
pub struct FileWatcher {
    path: PathBuf,
    period: Duration,
    next_poll: Instant,
    seen: Option<(Option<SystemTime>, u64)>,
    hash: Option<[u8; 32]>,
}

impl FileWatcher {
    /// A watcher of `path` polling every `period`; `initial` is the content already
    /// running (so the first poll does not reload it).
    pub fn new(path: impl Into<PathBuf>, period: Duration, initial: Option<&[u8]>) -> Self {
        let path = path.into();
        let seen = std::fs::metadata(&path)
            .ok()
            .map(|m| (m.modified().ok(), m.len()));
        Self {
            path,
            period,
            next_poll: Instant::now() + period,
            seen,
            hash: initial.map(reflex_msgs::hash::sha256),
        }
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// If the poll period elapsed and the file changed (mtime or size, then content
    /// hash), its new bytes.
    pub fn poll(&mut self, now: Instant) -> Option<PolicyMessage> {
        if now < self.next_poll {
            return None;
        }
        self.next_poll = now + self.period;
        self.check()
    }

    /// Checks the file now, ignoring the poll period.
    pub fn check(&mut self) -> Option<PolicyMessage> {
        let meta = std::fs::metadata(&self.path).ok()?;
        let stamp = (meta.modified().ok(), meta.len());
        if self.seen == Some(stamp) {
            return None;
        }
        // A writer may still be busy: read now, and remember what we read.
        let bytes = std::fs::read(&self.path).ok()?;
        self.seen = Some(stamp);
        let hash = reflex_msgs::hash::sha256(&bytes);
        if self.hash == Some(hash) {
            return None;
        }
        self.hash = Some(hash);
        Some(PolicyMessage::File {
            path: self.path.clone(),
            bytes,
        })
    }
}

/// Counters of the swap thread.
#[derive(Debug, Default)]
pub struct SwapStats {
    /// Policies accepted and handed to the control thread.
    pub accepted: AtomicU64,
    /// Policies refused.
    pub rejected: AtomicU64,
    /// Policy messages that failed to decode (from the policy source).
    pub decode_errors: AtomicU64,
}

/// The running swap thread.
#[derive(Debug)]
pub struct Swapper {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Swapper {
    /// Starts the swap thread: it waits on `source` for policy updates (taking each as
    /// soon as it arrives, for sources that can block), checks the file watcher, if
    /// any, and its stop flag at least every `poll` interval, and sends accepted actors
    /// into the returned receiver, which the control thread polls once per tick.
    pub fn start(
        mut validator: Validator,
        mut source: Box<dyn PolicySource>,
        mut watcher: Option<FileWatcher>,
        poll: Duration,
        stats: Arc<SwapStats>,
    ) -> (Swapper, Receiver<Box<dyn Actor>>) {
        let (tx, rx): (Sender<Box<dyn Actor>>, _) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("reflexd-swap".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::SeqCst) {
                    let mut offered = Vec::new();
                    while let Some(message) = source.poll() {
                        offered.push(message);
                    }
                    if let Some(w) = watcher.as_mut() {
                        offered.extend(w.poll(Instant::now()));
                    }
                    if offered.is_empty() {
                        // Block on the source (not a sleep): an update is validated
                        // the moment it arrives, not at the next poll.
                        if let Some(message) = source.wait(poll) {
                            offered.push(message);
                            while let Some(message) = source.poll() {
                                offered.push(message);
                            }
                        }
                    }
                    stats
                        .decode_errors
                        .store(source.decode_errors(), Ordering::SeqCst);
                    for message in offered {
                        let origin = match &message {
                            PolicyMessage::Update(_) => "from the network".to_string(),
                            PolicyMessage::File { path, .. } => {
                                format!("from the file {}", path.display())
                            }
                        };
                        match validator.validate(&message) {
                            Ok(actor) => {
                                tracing::info!(
                                    "policy v{} accepted {origin}; swapping in",
                                    actor.version()
                                );
                                stats.accepted.fetch_add(1, Ordering::SeqCst);
                                if tx.send(actor).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::warn!("{e} ({origin}); the running policy stays");
                                stats.rejected.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                }
            })
            .expect("spawn the swap thread");
        (Swapper { stop, handle }, rx)
    }

    /// Stops the thread and waits for it.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
    }
}
