//! Verdicts, exit codes and the machine-readable shape of results.

use bftlog_spec::policy::Evaluation;
use serde::Serialize;

/// The verdict of one check. The CLI's exit code is [`Status::exit_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Everything verified.
    Valid,
    /// Well-formed input that does not verify (bad signature, quorum not
    /// met, proof does not reconstruct the root, ...).
    Invalid,
    /// Input that could not be read or parsed, or a usage error.
    Malformed,
    /// Two checkpoints that cannot both be honest: a split view.
    Equivocation,
}

impl Status {
    /// 0 valid, 1 verification failed, 2 usage or malformed/unreadable
    /// input, 3 equivocation detected.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Valid => 0,
            Status::Invalid => 1,
            Status::Malformed => 2,
            Status::Equivocation => 3,
        }
    }
}

/// What a policy found in a checkpoint, ready to print or serialise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointReport {
    pub origin: String,
    pub size: u64,
    /// Base64 root hash, as in the checkpoint.
    pub root: String,
    pub extensions: Vec<String>,
    /// vkeys of the replica (log) keys whose signatures verified.
    pub replica_signers: Vec<String>,
    /// Log keys the policy lists for this origin.
    pub replicas_listed: usize,
    pub replica_threshold: usize,
    pub replica_quorum_met: bool,
    pub cosignatures: Vec<CosignatureReport>,
    /// Policy groups whose thresholds the cosignatures met.
    pub groups_met: Vec<String>,
    pub witness_quorum_met: bool,
}

/// One verified witness cosignature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CosignatureReport {
    /// The witness's name in the policy.
    pub witness: String,
    pub key: String,
    /// Seconds since the Unix epoch, as signed.
    pub timestamp: u64,
    /// The same instant in RFC 3339 (UTC).
    pub time: String,
}

impl CheckpointReport {
    pub fn new(evaluation: &Evaluation, replicas_listed: usize) -> Self {
        let cp = &evaluation.checkpoint;
        CheckpointReport {
            origin: cp.origin.clone(),
            size: cp.size,
            root: cp.root.to_base64(),
            extensions: cp.extensions.clone(),
            replica_signers: evaluation
                .log_signers
                .iter()
                .map(|k| k.to_string())
                .collect(),
            replicas_listed,
            replica_threshold: evaluation.log_threshold,
            replica_quorum_met: evaluation.log_signers.len() >= evaluation.log_threshold,
            cosignatures: evaluation
                .cosigners
                .iter()
                .map(|c| CosignatureReport {
                    witness: c.name.clone(),
                    key: c.key.to_string(),
                    timestamp: c.timestamp,
                    time: format_unix_time(c.timestamp),
                })
                .collect(),
            groups_met: evaluation.groups_met.clone(),
            witness_quorum_met: evaluation.witness_quorum_met,
        }
    }

    /// Human-readable lines, each ending in a newline.
    pub fn human(&self) -> String {
        let mut out = format!(
            "origin: {}\nsize: {}\nroot: {}\n",
            self.origin, self.size, self.root
        );
        for line in &self.extensions {
            out.push_str(&format!("extension: {line}\n"));
        }
        // One listed log key is a single-key log (or a bftlog cluster key
        // policy): its signature is not a replica's.
        let label = if self.replicas_listed == 1 {
            "log key signatures"
        } else {
            "replica signatures"
        };
        out.push_str(&format!(
            "{label}: {} of {} listed, {} required ({})\n",
            self.replica_signers.len(),
            self.replicas_listed,
            self.replica_threshold,
            if self.replica_quorum_met {
                "met"
            } else {
                "NOT met"
            }
        ));
        for key in &self.replica_signers {
            out.push_str(&format!("  signed by {key}\n"));
        }
        out.push_str(&format!(
            "witness cosignatures: {} (quorum {})\n",
            self.cosignatures.len(),
            if self.witness_quorum_met {
                "met"
            } else {
                "NOT met"
            }
        ));
        for c in &self.cosignatures {
            out.push_str(&format!(
                "  cosigned by {} at {} ({}) with {}\n",
                c.witness, c.time, c.timestamp, c.key
            ));
        }
        if !self.groups_met.is_empty() {
            out.push_str(&format!("groups met: {}\n", self.groups_met.join(", ")));
        }
        out
    }
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC, e.g.
/// `2023-11-14T22:13:20Z`. Years past 9999 print with more digits.
pub fn format_unix_time(timestamp: u64) -> String {
    let days = timestamp / 86_400;
    let secs = timestamp % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, restricted to non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_format_as_rfc3339() {
        assert_eq!(format_unix_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_unix_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix_time(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(format_unix_time(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(format_unix_time(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn day_arithmetic_agrees_with_a_naive_calendar_for_four_centuries() {
        let leap = |y: u64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for days in 0..146_097 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let month_len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(Status::Valid.exit_code(), 0);
        assert_eq!(Status::Invalid.exit_code(), 1);
        assert_eq!(Status::Malformed.exit_code(), 2);
        assert_eq!(Status::Equivocation.exit_code(), 3);
    }
}
