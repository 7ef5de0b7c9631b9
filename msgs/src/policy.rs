//! Policies on the wire: [`PolicySpec`] (what a policy is) and [`PolicyUpdate`] (a
//! policy shipped to robots).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::hash::{is_sha256_hex, sha256, SHA256_LEN};
use crate::{ActionSpace, BoxSpace, SpaceError, WIRE_VERSION};

/// Length of an ed25519 signature in bytes.
pub const ED25519_SIGNATURE_LEN: usize = 64;

/// Domain-separation prefix of [`PolicyUpdate::signing_message`] (16 bytes), so a
/// policy signature can never be mistaken for a signature over anything else.
pub const POLICY_SIGNING_DOMAIN: &[u8; 16] = b"reflex/policy/v1";

/// Length of [`PolicyUpdate::signing_message`]: domain, version, digest.
pub const SIGNING_MESSAGE_LEN: usize = POLICY_SIGNING_DOMAIN.len() + 8 + SHA256_LEN;

/// The largest discrete action count and LSTM width a [`PolicySpec`] may
/// declare (65,536: far beyond any policy here, small enough to allocate).
pub const MAX_POLICY_SIZE: u64 = 1 << 16;

/// Why a [`PolicySpec`] or [`PolicyUpdate`] is not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// The spec's `wire_version` is newer than this build (or 0): e.g. JSON metadata
    /// written by a newer trainer.
    #[error("policy spec has wire_version {found}; this build reads 1..={supported}")]
    UnsupportedVersion {
        /// The spec's `wire_version`.
        found: u16,
        /// [`WIRE_VERSION`].
        supported: u16,
    },
    /// `algorithm` is empty.
    #[error("policy spec has no algorithm name")]
    NoAlgorithm,
    /// The observation space is not a valid box.
    #[error("observation space: {0}")]
    ObservationSpace(SpaceError),
    /// The observation space has no dimensions.
    #[error("observation space has 0 dimensions")]
    EmptyObservationSpace,
    /// The action space is not valid.
    #[error("action space: {0}")]
    ActionSpace(SpaceError),
    /// `obs_mean` / `obs_std` are neither both empty nor both of the observation's
    /// dimension.
    #[error("normalization has {mean} means and {std} stds for {obs_dim} observation dims")]
    NormalizationLength {
        /// `obs_mean.len()`.
        mean: usize,
        /// `obs_std.len()`.
        std: usize,
        /// Observation dimension.
        obs_dim: usize,
    },
    /// A normalization mean is not finite, or a std is not finite and positive.
    #[error(
        "normalization entry {index}: mean {mean}, std {std} (need finite mean, finite std > 0)"
    )]
    NormalizationValue {
        /// Dimension index.
        index: usize,
        /// `obs_mean[index]`.
        mean: f32,
        /// `obs_std[index]`.
        std: f32,
    },
    /// A size in the spec is beyond what any policy here needs (a runtime
    /// would allocate by it before it could find out the graph is wrong).
    #[error("policy spec: {what} = {value}, more than {max}")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The largest accepted.
        max: u64,
    },
    /// `source_checkpoint_sha256` is neither empty nor 64 lowercase hex digits.
    #[error("source_checkpoint_sha256 {0:?} is not 64 lowercase hex digits")]
    CheckpointHash(String),
    /// The update's `policy_version` differs from its spec's.
    #[error("update carries policy_version {update} but its spec says {spec}")]
    VersionMismatch {
        /// [`PolicyUpdate::policy_version`].
        update: u64,
        /// [`PolicySpec::policy_version`].
        spec: u64,
    },
    /// `onnx_sha256` is not the SHA-256 of `onnx`.
    #[error("onnx_sha256 does not match the SHA-256 of the {len} ONNX bytes")]
    HashMismatch {
        /// Length of the ONNX bytes.
        len: usize,
    },
    /// The signature is neither empty nor 64 bytes.
    #[error("signature is {0} bytes, expected 0 or 64")]
    SignatureLength(usize),
}

/// What a policy is: enough to validate an ONNX file against an environment and to
/// know where it came from (`PolicySpec.msg`).
///
/// Stored as JSON in the ONNX file's `metadata_props` under
/// [`onnx::METADATA_POLICY_SPEC`](crate::onnx::METADATA_POLICY_SPEC) (non-finite
/// bounds are written as `"inf"` / `"-inf"` there) and sent inside every
/// [`PolicyUpdate`]. Unknown JSON keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Schema version, [`WIRE_VERSION`] when written by this build.
    pub wire_version: u16,
    /// Training algorithm, e.g. `"dqn"`, `"drqn"`, `"ddpg"`, `"naf"`.
    pub algorithm: String,
    /// Environment the policy was trained on, e.g. `"cartpole"` (informational).
    pub env_id: String,
    /// Observation space (the ONNX `obs` input has `observation_space.dim()` columns).
    pub observation_space: BoxSpace,
    /// Action space (discrete: output `q` has `n` columns; box: output `action` has
    /// `dim` columns, already within the bounds).
    pub action_space: ActionSpace,
    /// LSTM hidden size of a recurrent policy; 0 = feed-forward.
    pub recurrent_hidden_size: u32,
    /// Observation normalization mean per dimension (applied inside the graph; recorded
    /// here for reference); empty = none.
    #[serde(with = "crate::serde_util::f32_seq")]
    pub obs_mean: Vec<f32>,
    /// Observation normalization standard deviation per dimension; empty = none.
    #[serde(with = "crate::serde_util::f32_seq")]
    pub obs_std: Vec<f32>,
    /// Policy version, increasing per fleet (0 = never published).
    pub policy_version: u64,
    /// Learner gradient steps taken when the policy was exported.
    pub training_step: u64,
    /// SHA-256 of the checkpoint the policy was exported from, lowercase hex; empty =
    /// unknown.
    pub source_checkpoint_sha256: String,
    /// Version of reflex that exported it (`CARGO_PKG_VERSION` of the trainer).
    pub reflex_version: String,
}

impl PolicySpec {
    /// Whether the policy is recurrent (has `h_in`/`c_in` inputs).
    pub fn is_recurrent(&self) -> bool {
        self.recurrent_hidden_size > 0
    }

    /// Checks the spec's internal consistency: a readable `wire_version` (JSON read
    /// from ONNX metadata skips the codec's version check), algorithm named,
    /// valid non-empty spaces, normalization absent or matching the observation
    /// dimension with positive finite stds, checkpoint hash empty or 64 lowercase hex
    /// digits.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(1..=WIRE_VERSION).contains(&self.wire_version) {
            return Err(PolicyError::UnsupportedVersion {
                found: self.wire_version,
                supported: WIRE_VERSION,
            });
        }
        if self.algorithm.is_empty() {
            return Err(PolicyError::NoAlgorithm);
        }
        self.observation_space
            .validate()
            .map_err(PolicyError::ObservationSpace)?;
        let obs_dim = self.observation_space.dim();
        if obs_dim == 0 {
            return Err(PolicyError::EmptyObservationSpace);
        }
        self.action_space
            .validate()
            .map_err(PolicyError::ActionSpace)?;
        let (mean, std) = (self.obs_mean.len(), self.obs_std.len());
        if !(mean == 0 && std == 0 || mean == obs_dim && std == obs_dim) {
            return Err(PolicyError::NormalizationLength { mean, std, obs_dim });
        }
        for (index, (&mean, &std)) in self.obs_mean.iter().zip(&self.obs_std).enumerate() {
            if !(mean.is_finite() && std.is_finite() && std > 0.0) {
                return Err(PolicyError::NormalizationValue { index, mean, std });
            }
        }
        let sizes = [
            (
                "recurrent_hidden_size",
                u64::from(self.recurrent_hidden_size),
            ),
            (
                "action_space.n",
                match self.action_space {
                    ActionSpace::Discrete { n } => u64::from(n),
                    ActionSpace::Box(_) => 0,
                },
            ),
        ];
        for (what, value) in sizes {
            if value > MAX_POLICY_SIZE {
                return Err(PolicyError::TooLarge {
                    what,
                    value,
                    max: MAX_POLICY_SIZE,
                });
            }
        }
        let hash = &self.source_checkpoint_sha256;
        if !hash.is_empty() && !is_sha256_hex(hash) {
            return Err(PolicyError::CheckpointHash(hash.clone()));
        }
        Ok(())
    }
}

impl Default for PolicySpec {
    /// An empty spec (not valid until algorithm and spaces are filled in).
    fn default() -> Self {
        Self {
            wire_version: WIRE_VERSION,
            algorithm: String::new(),
            env_id: String::new(),
            observation_space: BoxSpace::default(),
            action_space: ActionSpace::Discrete { n: 0 },
            recurrent_hidden_size: 0,
            obs_mean: Vec::new(),
            obs_std: Vec::new(),
            policy_version: 0,
            training_step: 0,
            source_checkpoint_sha256: String::new(),
            reflex_version: String::new(),
        }
    }
}

/// A policy shipped from the learner to every daemon of a fleet on
/// [`keys::POLICY`](crate::keys::POLICY) /
/// [`topics::POLICY_UPDATE`](crate::topics::POLICY_UPDATE) (`PolicyUpdate.msg`).
///
/// The daemon checks [`PolicyUpdate::validate`] (hash, versions), the signature over
/// [`PolicyUpdate::signing_message`] when a key is configured, and then the ONNX file
/// itself. The signature covers the ONNX bytes (through their hash) and the version;
/// `spec` is a convenience copy of the spec inside the ONNX metadata, which is the
/// authoritative, signed one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyUpdate {
    /// Schema version, [`WIRE_VERSION`] when written by this build.
    pub wire_version: u16,
    /// Version of the policy; equals `spec.policy_version`.
    pub policy_version: u64,
    /// The policy's spec.
    pub spec: PolicySpec,
    /// The ONNX model file, byte for byte.
    #[serde(with = "crate::serde_util::bytes")]
    pub onnx: Vec<u8>,
    /// SHA-256 of `onnx`.
    pub onnx_sha256: [u8; SHA256_LEN],
    /// ed25519 signature over [`PolicyUpdate::signing_message`], 64 bytes; empty =
    /// unsigned. Decoding refuses any other length.
    #[serde(with = "crate::serde_util::signature")]
    pub signature: Vec<u8>,
}

impl PolicyUpdate {
    /// An unsigned update for `onnx`, with its hash computed and the version taken from
    /// `spec`.
    pub fn new(spec: PolicySpec, onnx: Vec<u8>) -> Self {
        Self {
            wire_version: WIRE_VERSION,
            policy_version: spec.policy_version,
            onnx_sha256: sha256(&onnx),
            spec,
            onnx,
            signature: Vec::new(),
        }
    }

    /// Whether `onnx_sha256` is the SHA-256 of `onnx`.
    pub fn sha256_matches(&self) -> bool {
        sha256(&self.onnx) == self.onnx_sha256
    }

    /// Checks the update's integrity: versions agree, the hash matches, the signature
    /// length is 0 or 64. It does not verify the signature (that needs the key) or the
    /// spec's contents (see [`PolicySpec::validate`]).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.policy_version != self.spec.policy_version {
            return Err(PolicyError::VersionMismatch {
                update: self.policy_version,
                spec: self.spec.policy_version,
            });
        }
        if !self.sha256_matches() {
            return Err(PolicyError::HashMismatch {
                len: self.onnx.len(),
            });
        }
        match self.signature.len() {
            0 | ED25519_SIGNATURE_LEN => Ok(()),
            n => Err(PolicyError::SignatureLength(n)),
        }
    }

    /// The bytes the ed25519 signature signs: [`POLICY_SIGNING_DOMAIN`], then
    /// `policy_version` (u64 little-endian), then `onnx_sha256`.
    pub fn signing_message(&self) -> [u8; SIGNING_MESSAGE_LEN] {
        let mut message = [0u8; SIGNING_MESSAGE_LEN];
        let (domain, rest) = message.split_at_mut(POLICY_SIGNING_DOMAIN.len());
        let (version, digest) = rest.split_at_mut(8);
        domain.copy_from_slice(POLICY_SIGNING_DOMAIN);
        version.copy_from_slice(&self.policy_version.to_le_bytes());
        digest.copy_from_slice(&self.onnx_sha256);
        message
    }

    /// The signature, if the update is signed (and it has the right length).
    pub fn signature(&self) -> Option<&[u8; ED25519_SIGNATURE_LEN]> {
        self.signature.as_slice().try_into().ok()
    }

    /// Attaches a signature over [`PolicyUpdate::signing_message`].
    pub fn set_signature(&mut self, signature: [u8; ED25519_SIGNATURE_LEN]) {
        self.signature = signature.to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    pub(crate) fn cartpole_spec() -> PolicySpec {
        PolicySpec {
            algorithm: "dqn".into(),
            env_id: "cartpole".into(),
            observation_space: BoxSpace::new(
                vec![-4.8, f32::MIN, -0.42, f32::MIN],
                vec![4.8, f32::MAX, 0.42, f32::MAX],
            )
            .unwrap(),
            action_space: ActionSpace::Discrete { n: 2 },
            policy_version: 3,
            training_step: 1000,
            reflex_version: "0.1.0".into(),
            ..PolicySpec::default()
        }
    }

    #[test]
    fn spec_validation() {
        let spec = cartpole_spec();
        assert_eq!(spec.validate(), Ok(()));
        assert!(!spec.is_recurrent());

        let mut bad = spec.clone();
        bad.wire_version = WIRE_VERSION + 1;
        assert_eq!(
            bad.validate(),
            Err(PolicyError::UnsupportedVersion {
                found: WIRE_VERSION + 1,
                supported: WIRE_VERSION
            })
        );

        let mut bad = spec.clone();
        bad.algorithm.clear();
        assert_eq!(bad.validate(), Err(PolicyError::NoAlgorithm));

        let mut bad = spec.clone();
        bad.obs_mean = vec![0.0; 4];
        assert!(matches!(
            bad.validate(),
            Err(PolicyError::NormalizationLength { .. })
        ));
        bad.obs_std = vec![1.0, 1.0, 0.0, 1.0];
        assert!(matches!(
            bad.validate(),
            Err(PolicyError::NormalizationValue { index: 2, .. })
        ));
        bad.obs_std[2] = 0.5;
        assert_eq!(bad.validate(), Ok(()));

        let mut bad = spec.clone();
        bad.source_checkpoint_sha256 = "abc".into();
        assert!(matches!(
            bad.validate(),
            Err(PolicyError::CheckpointHash(_))
        ));
        bad.source_checkpoint_sha256 = crate::hash::to_hex(&sha256(b"ckpt"));
        assert_eq!(bad.validate(), Ok(()));

        let mut bad = spec.clone();
        bad.action_space = ActionSpace::Discrete { n: 0 };
        assert_eq!(
            bad.validate(),
            Err(PolicyError::ActionSpace(SpaceError::NoActions))
        );

        // Sizes a runtime allocates by are bounded.
        let mut big = spec.clone();
        big.recurrent_hidden_size = 1 << 16;
        big.action_space = ActionSpace::Discrete { n: 1 << 16 };
        assert_eq!(big.validate(), Ok(()));
        big.recurrent_hidden_size = u32::MAX;
        assert!(matches!(
            big.validate(),
            Err(PolicyError::TooLarge {
                what: "recurrent_hidden_size",
                ..
            })
        ));
        big.recurrent_hidden_size = 64;
        big.action_space = ActionSpace::Discrete { n: (1 << 16) + 1 };
        assert!(matches!(
            big.validate(),
            Err(PolicyError::TooLarge {
                what: "action_space.n",
                ..
            })
        ));

        let mut bad = spec;
        bad.observation_space = BoxSpace::default();
        assert_eq!(bad.validate(), Err(PolicyError::EmptyObservationSpace));
    }

    #[test]
    fn update_integrity() {
        let mut update = PolicyUpdate::new(cartpole_spec(), vec![1, 2, 3]);
        assert_eq!(update.policy_version, 3);
        assert!(update.sha256_matches());
        assert_eq!(update.validate(), Ok(()));
        assert_eq!(update.signature(), None);

        update.set_signature([7; ED25519_SIGNATURE_LEN]);
        assert_eq!(update.signature(), Some(&[7; ED25519_SIGNATURE_LEN]));
        assert_eq!(update.validate(), Ok(()));

        let message = update.signing_message();
        assert_eq!(&message[..16], POLICY_SIGNING_DOMAIN);
        assert_eq!(message[16..24], 3u64.to_le_bytes());
        assert_eq!(message[24..], update.onnx_sha256);

        update.onnx.push(4);
        assert!(!update.sha256_matches());
        assert_eq!(update.validate(), Err(PolicyError::HashMismatch { len: 4 }));

        let mut update = PolicyUpdate::new(cartpole_spec(), vec![]);
        update.policy_version = 4;
        assert!(matches!(
            update.validate(),
            Err(PolicyError::VersionMismatch { update: 4, spec: 3 })
        ));
        update.policy_version = 3;
        update.signature = vec![0; 10];
        assert_eq!(update.validate(), Err(PolicyError::SignatureLength(10)));
    }
}
