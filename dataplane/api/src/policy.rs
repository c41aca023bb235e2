//! Security policies: which cleartext traffic is protected, let through or
//! dropped (the SPD of RFC 4301, reduced to prefix pairs).

use serde::{Deserialize, Serialize};

use crate::prefix::Prefix;
use crate::sa::{validate_spi, Direction, ValidationError};

/// What a policy does with matching traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    /// Send through (out) or require arrival through (in) the SA named by
    /// the policy's `spi`.
    Protect,
    /// Pass in the clear.
    Bypass,
    /// Discard.
    Drop,
}

impl PolicyAction {
    /// `"protect"`, `"bypass"` or `"drop"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyAction::Protect => "protect",
            PolicyAction::Bypass => "bypass",
            PolicyAction::Drop => "drop",
        }
    }
}

/// One policy. For `out`, `local` matches the inner source and `remote` the
/// inner destination; for `in`, the other way round.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Our side's prefix.
    pub local: Prefix,
    /// The peer's side's prefix.
    pub remote: Prefix,
    /// Traffic direction the policy applies to.
    pub direction: Direction,
    /// Protect, bypass or drop.
    pub action: PolicyAction,
    /// The SA of a `protect` policy (same direction); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spi: Option<u32>,
}

/// What identifies a policy: its selector and direction (`DeletePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyKey {
    /// Our side's prefix.
    pub local: Prefix,
    /// The peer's side's prefix.
    pub remote: Prefix,
    /// Direction.
    pub direction: Direction,
}

impl Policy {
    /// The key that identifies this policy.
    pub fn key(&self) -> PolicyKey {
        PolicyKey {
            local: self.local,
            remote: self.remote,
            direction: self.direction,
        }
    }

    /// Checks families and that `spi` is given exactly for `protect`.
    /// Whether the SA exists is for the holder of the SA table to check.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.local.is_ipv4() != self.remote.is_ipv4() {
            return Err(ValidationError::new(
                "remote",
                format!(
                    "address family of {} differs from local {}",
                    self.remote, self.local
                ),
            ));
        }
        match (self.action, self.spi) {
            (PolicyAction::Protect, None) => Err(ValidationError::new(
                "spi",
                "action \"protect\" needs the SPI of the SA to use",
            )),
            (PolicyAction::Protect, Some(spi)) => {
                validate_spi(spi).map_err(|r| ValidationError::new("spi", r))
            }
            (action, Some(_)) => Err(ValidationError::new(
                "spi",
                format!(
                    "only action \"protect\" takes an SPI, this policy is \"{}\"",
                    action.as_str()
                ),
            )),
            (_, None) => Ok(()),
        }
    }
}
