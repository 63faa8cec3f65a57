//! Identifiers that end up in object keys, Redis keys and NATS subjects, so their alphabet is
//! restricted: a job id or tenant can never smuggle a `/`, `.`, `*` or `>` into a key or subject.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A job id: `job_` + a UUIDv7 in hex. Time-ordered, so sorting ids sorts jobs by creation.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^job_[0-9a-f]{32}$")]
pub struct JobId(String);

impl JobId {
    pub fn generate() -> JobId {
        JobId(format!("job_{}", uuid::Uuid::now_v7().simple()))
    }

    /// Accepts ids of the shape [`JobId::generate`] makes (and nothing else).
    pub fn parse(value: &str) -> Option<JobId> {
        let hex = value.strip_prefix("job_")?;
        let valid = hex.len() == 32
            && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| JobId(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for JobId {
    type Error = String;

    fn try_from(value: String) -> Result<JobId, String> {
        JobId::parse(&value).ok_or_else(|| format!("`{value}` is not a job id"))
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

/// A tenant: 1–64 characters of `a-z`, `0-9`, `-`, `_`. Derived from the API key, never from
/// the request.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[a-z0-9_-]{1,64}$")]
pub struct Tenant(String);

impl Tenant {
    pub fn parse(value: &str) -> Option<Tenant> {
        let valid = (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        valid.then(|| Tenant(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Tenant {
    type Error = String;

    fn try_from(value: String) -> Result<Tenant, String> {
        Tenant::parse(&value)
            .ok_or_else(|| format!("`{value}` is not a valid tenant (a-z, 0-9, -, _; 1-64 chars)"))
    }
}

impl From<Tenant> for String {
    fn from(tenant: Tenant) -> String {
        tenant.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_sort_by_creation() {
        let a = JobId::generate();
        let b = JobId::generate();
        assert_eq!(JobId::parse(a.as_str()), Some(a.clone()));
        assert!(a < b);
    }

    #[test]
    fn ids_and_tenants_reject_key_and_subject_metacharacters() {
        for bad in ["job_../x", "job_*", "job_>", "job_ABC", "x", ""] {
            assert_eq!(JobId::parse(bad), None, "{bad}");
        }
        for bad in ["a/b", "a.b", "a*", "A", "", &"x".repeat(65)] {
            assert_eq!(Tenant::parse(bad), None, "{bad}");
        }
        assert!(Tenant::parse("acme-01_x").is_some());
    }
}
