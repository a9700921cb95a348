//! Which logs a witness serves: per origin, the trusted log keys and how
//! many distinct ones must sign a checkpoint.
//!
//! A single-key C2SP log has one key and threshold 1. A bftlog origin lists
//! every replica key; its threshold defaults to the BFT quorum
//! ⌊(n+f)/2⌋+1 with f = ⌊(n−1)/3⌋, which is what the log's own policy
//! (`replica-quorum`) demands, so a checkpoint that fewer replicas signed
//! is refused with 403.

use bftlog_spec::note::{KeyRing, KeyType, VerifierKey, check_name};
use bftlog_spec::policy::Policy;

/// Most keys one log may list (a replica set larger than any deployment).
pub const MAX_LOG_KEYS: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    origin: String,
    keys: Vec<VerifierKey>,
    threshold: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogConfigError {
    #[error("origin {origin:?}: {reason}")]
    Origin { origin: String, reason: String },
    #[error("a log needs at least one key")]
    NoKeys,
    #[error("more than {MAX_LOG_KEYS} keys")]
    TooManyKeys,
    #[error("key {key} is named {name:?}: C2SP log keys are named after the origin {origin:?}")]
    KeyName {
        key: String,
        name: String,
        origin: String,
    },
    #[error("key {0} is not an Ed25519 (type 0x01) log key")]
    KeyType(String),
    #[error("key {0} is listed twice")]
    DuplicateKey(String),
    #[error(
        "threshold {k} of {n} keys: need 1 <= k <= n and 2k > n, so two disjoint key sets can never both sign"
    )]
    Threshold { k: usize, n: usize },
    #[error("stored configuration line {line}: {reason}")]
    Text { line: usize, reason: String },
}

/// The BFT quorum for `n` replica keys (1 for a single-key log).
pub fn default_threshold(n: usize) -> usize {
    assert!(n > 0, "a log has at least one key");
    let f = (n - 1) / 3;
    (n + f) / 2 + 1
}

impl LogConfig {
    pub fn new(
        origin: &str,
        keys: Vec<VerifierKey>,
        threshold: Option<usize>,
    ) -> Result<Self, LogConfigError> {
        check_name(origin).map_err(|e| LogConfigError::Origin {
            origin: origin.to_owned(),
            reason: e.to_string(),
        })?;
        if keys.is_empty() {
            return Err(LogConfigError::NoKeys);
        }
        if keys.len() > MAX_LOG_KEYS {
            return Err(LogConfigError::TooManyKeys);
        }
        for (i, key) in keys.iter().enumerate() {
            if key.name() != origin {
                return Err(LogConfigError::KeyName {
                    key: key.to_string(),
                    name: key.name().to_owned(),
                    origin: origin.to_owned(),
                });
            }
            if key.key_type() != KeyType::Ed25519 {
                return Err(LogConfigError::KeyType(key.to_string()));
            }
            if keys[..i]
                .iter()
                .any(|k| k.public_key() == key.public_key() || k.key_id() == key.key_id())
            {
                return Err(LogConfigError::DuplicateKey(key.to_string()));
            }
        }
        let n = keys.len();
        let k = threshold.unwrap_or_else(|| default_threshold(n));
        if k == 0 || k > n || 2 * k <= n {
            return Err(LogConfigError::Threshold { k, n });
        }
        Ok(LogConfig {
            origin: origin.to_owned(),
            keys,
            threshold: k,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn keys(&self) -> &[VerifierKey] {
        &self.keys
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    pub fn key_ring(&self) -> KeyRing {
        KeyRing::from_keys(self.keys.iter().cloned()).expect("keys were checked to be distinct")
    }

    /// A tlog-policy accepting exactly this log (no witnesses), used to
    /// build and check split-view evidence.
    pub fn policy(&self) -> Policy {
        Policy::parse(self.policy_text().as_bytes())
            .expect("a checked log config is a valid policy")
    }

    /// The policy text of [`LogConfig::policy`].
    pub fn policy_text(&self) -> String {
        let mut text = String::new();
        for key in &self.keys {
            text.push_str(&format!("log {key}\n"));
        }
        if self.keys.len() > 1 {
            text.push_str(&format!(
                "replica-quorum {} {}\n",
                self.origin, self.threshold
            ));
        }
        text.push_str("quorum none\n");
        text
    }

    /// Storage text: `origin O`, `threshold K`, then one `key <vkey>` line
    /// per key.
    pub fn to_text(&self) -> String {
        let mut text = format!("origin {}\nthreshold {}\n", self.origin, self.threshold);
        for key in &self.keys {
            text.push_str(&format!("key {key}\n"));
        }
        text
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, LogConfigError> {
        let bad = |line: usize, reason: &str| LogConfigError::Text {
            line,
            reason: reason.to_owned(),
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad(0, "not UTF-8"))?;
        let mut origin = None;
        let mut threshold = None;
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let (field, value) = line.split_once(' ').ok_or(bad(i + 1, "no value"))?;
            match field {
                "origin" if origin.is_none() => origin = Some(value),
                "threshold" if threshold.is_none() => {
                    threshold = Some(value.parse().map_err(|_| bad(i + 1, "bad threshold"))?)
                }
                "key" => {
                    keys.push(VerifierKey::parse(value).map_err(|e| bad(i + 1, &e.to_string()))?)
                }
                _ => return Err(bad(i + 1, "unexpected field")),
            }
        }
        let origin = origin.ok_or(bad(0, "no origin"))?;
        let config = LogConfig::new(origin, keys, threshold)?;
        if config.to_text().as_bytes() != bytes {
            return Err(bad(0, "not in canonical form"));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bftlog_spec::note::SignerKey;

    fn key(origin: &str, seed: u8) -> VerifierKey {
        SignerKey::new(
            origin,
            KeyType::Ed25519,
            ed25519_dalek::SigningKey::from_bytes(&[seed; 32]),
        )
        .unwrap()
        .verifier()
    }

    #[test]
    fn default_thresholds_are_the_bft_quorum() {
        let expected = [(1, 1), (2, 2), (3, 2), (4, 3), (5, 4), (7, 5), (10, 7)];
        for (n, k) in expected {
            assert_eq!(default_threshold(n), k, "n = {n}");
        }
        for n in 1..=64 {
            let k = default_threshold(n);
            assert!(2 * k > n && k <= n);
        }
    }

    #[test]
    fn round_trips_and_checks() {
        let keys: Vec<_> = (1..=4).map(|s| key("example.com/log", s)).collect();
        let config = LogConfig::new("example.com/log", keys.clone(), None).unwrap();
        assert_eq!(config.threshold(), 3);
        assert_eq!(
            LogConfig::parse(config.to_text().as_bytes()).unwrap(),
            config
        );
        assert_eq!(config.policy().log_threshold("example.com/log"), 3);
        assert!(matches!(
            LogConfig::new("example.com/log", keys.clone(), Some(2)),
            Err(LogConfigError::Threshold { k: 2, n: 4 })
        ));
        assert!(matches!(
            LogConfig::new("example.com/other", keys.clone(), None),
            Err(LogConfigError::KeyName { .. })
        ));
        let mut twice = keys.clone();
        twice.push(keys[0].clone());
        assert!(matches!(
            LogConfig::new("example.com/log", twice, None),
            Err(LogConfigError::DuplicateKey(_))
        ));
        assert_eq!(
            LogConfig::new("example.com/log", vec![], None),
            Err(LogConfigError::NoKeys)
        );
        let single = LogConfig::new("example.com/log", vec![keys[0].clone()], None).unwrap();
        assert_eq!(single.threshold(), 1);
        assert!(!single.policy_text().contains("replica-quorum"));
    }
}
