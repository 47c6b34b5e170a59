//! Identifiers: site ids (from certificates only), study ids and study hashes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("invalid {what} {value:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '-' and '_'")]
    Invalid { what: &'static str, value: String },
}

fn check(what: &'static str, value: &str) -> Result<(), IdError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(IdError::Invalid {
            what,
            value: value.to_string(),
        })
    }
}

/// A hospital's identity. Ordered, because contributions are always summed in `SiteId` order so
/// that results repeat bit for bit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteId(String);

impl SiteId {
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check("site id", &value)?;
        Ok(Self(value))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SiteId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::new(value)
    }
}
impl From<SiteId> for String {
    fn from(id: SiteId) -> String {
        id.0
    }
}
impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A study's name within one aggregator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StudyId(String);

impl StudyId {
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check("study id", &value)?;
        Ok(Self(value))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for StudyId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::new(value)
    }
}
impl From<StudyId> for String {
    fn from(id: StudyId) -> String {
        id.0
    }
}
impl fmt::Display for StudyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 (hex) of a study's canonical JSON spec. A site answers only studies whose hash its
/// policy allows, and recomputes the hash itself from the spec it is sent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StudyHash(pub String);

impl fmt::Display for StudyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_ids_are_validated() {
        assert!(SiteId::new("S01").is_ok());
        assert!(SiteId::new("hospital_a-2").is_ok());
        for bad in ["", "../x", "a b", &"x".repeat(65)] {
            assert!(SiteId::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_refuses_invalid_ids() {
        let ok: SiteId = serde_json::from_str("\"S02\"").unwrap();
        assert_eq!(ok.as_str(), "S02");
        assert!(serde_json::from_str::<SiteId>("\"a/b\"").is_err());
    }
}
