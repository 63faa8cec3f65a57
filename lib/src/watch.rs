//! Watch folders: rules that turn every object created under a prefix of the bucket into a
//! job for a tenant, with the rule's job parameters — "drop a file, get renditions" for
//! systems that only know how to write to a bucket.
//!
//! Rules live in Redis (`tcoder:watch:rules`, name → JSON) so `tcoder watch add|remove`
//! changes them while ingest runs; `[[ingest.watch]]` entries are written there when ingest
//! starts; ingest reads them for every object outside `uploads/`, so a change applies to the
//! next object. A rule only sees objects created after it was: adding a rule over a full folder
//! does not transcode the folder's past.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::jobs::{JobRequest, JobSpec, SpecLimits, Tenant};
use crate::redis::{KEY_PREFIX, RedisError};
use crate::s3::{Key, KeyPrefix, keys};

/// How long an object version is remembered as seen (its idempotency record): a repeated
/// notification or a sweep within this window finds the job made for it, and the sweep looks
/// no further back than this.
pub const DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Longest prefix accepted (S3 keys are at most 1024 bytes).
const MAX_PREFIX: usize = 512;

/// One watch folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRule {
    /// 1–64 of `a-z`, `0-9`, `-`, `_`; recorded on every job the rule makes.
    pub name: String,
    /// Objects in this folder (or below) become jobs.
    pub prefix: KeyPrefix,
    pub tenant: Tenant,
    /// The job every matching object gets (validated when the rule is added).
    pub job: JobSpec,
    /// When the rule was added (ms since the epoch); older objects are not its business.
    pub created_at: u64,
}

/// A rule as configured (`[[ingest.watch]]`) or given to `tcoder watch add`: the job is the
/// body of `POST /v1/jobs` (preset, qualities, outputs, priority, `webhook_url`, metadata).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRuleRequest {
    pub name: String,
    pub prefix: String,
    pub tenant: String,
    #[serde(default)]
    pub job: serde_json::Value,
}

impl WatchRuleRequest {
    /// Validates into a rule created now.
    pub fn validate(
        &self,
        max_upload_bytes: u64,
        allowed_webhooks: &[std::net::SocketAddr],
    ) -> Result<WatchRule, String> {
        check_name(&self.name)?;
        let prefix = check_prefix(&self.prefix)?;
        let tenant = Tenant::parse(&self.tenant)
            .ok_or_else(|| format!("tenant `{}`: 1-64 of a-z, 0-9, - and _", self.tenant))?;
        let job = match &self.job {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            other => other.clone(),
        };
        let request: JobRequest = serde_json::from_value(job).map_err(|e| format!("job: {e}"))?;
        if request.content_length.is_some() || request.content_type.is_some() {
            return Err("job: content_length and content_type describe one upload; a rule \
                        matches many objects"
                .into());
        }
        if request.captions.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err("job: captions belong to one video; a rule matches many objects".into());
        }
        let limits = SpecLimits {
            max_upload_bytes,
            allowed_webhooks,
            tenant: &tenant,
            presigned: false,
            multipart_threshold: u64::MAX,
            import: None,
        };
        let job = JobSpec::from_request(request, limits).map_err(|e| format!("job.{e}"))?;
        Ok(WatchRule {
            name: self.name.clone(),
            prefix,
            tenant,
            job,
            created_at: crate::jobs::now_ms(),
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid { Ok(()) } else { Err(format!("name `{name}`: 1-64 of a-z, 0-9, - and _")) }
}

/// A prefix is a canonical folder (`incoming/acme/`) outside tcoder's own `uploads/` and
/// `outputs/`: watching outputs would feed every rendition back in as a new job, forever, and
/// a spelling like `incoming/../uploads/` names tcoder's folders through another.
fn check_prefix(prefix: &str) -> Result<KeyPrefix, String> {
    if prefix.len() > MAX_PREFIX {
        return Err(format!("prefix: at most {MAX_PREFIX} bytes"));
    }
    let folder =
        KeyPrefix::parse(prefix).map_err(|e| format!("prefix `{}`: {e}", prefix.escape_debug()))?;
    if folder == KeyPrefix::root() {
        return Err(format!("prefix `{prefix}`: a folder such as `incoming/acme/` (ends with /)"));
    }
    for own in [keys::uploads(), keys::outputs()] {
        if own.contains(&folder) || folder.contains(&own) {
            return Err(format!("prefix `{prefix}` overlaps tcoder's own `{own}`"));
        }
    }
    Ok(folder)
}

impl WatchRule {
    /// Whether `key` is a file this rule watches: under the prefix, not a folder marker
    /// (`…/`) and not a hidden file (`.DS_Store`, `._clip.mov`, partial uploads by rsync).
    pub fn watches(&self, key: &Key) -> bool {
        let Some(rest) = key.relative_to(&self.prefix) else { return false };
        let name = rest.rsplit('/').next().unwrap_or_default();
        !name.is_empty() && !name.starts_with('.')
    }
}

/// The rule that watches `key`: the one with the longest prefix, so a narrower folder can
/// override a wider one.
pub fn matching<'a>(rules: &'a [WatchRule], key: &Key) -> Option<&'a WatchRule> {
    rules.iter().filter(|rule| rule.watches(key)).max_by_key(|rule| rule.prefix.as_str().len())
}

fn rules_key() -> String {
    format!("{KEY_PREFIX}watch:rules")
}

/// Marks an object version a rule could not take (empty, too large), so sweeps that list it
/// again within the dedup window neither announce it again nor look it up in the store.
pub async fn remember_rejected(
    redis: &mut crate::redis::Conn,
    version: &str,
) -> Result<(), RedisError> {
    let () = redis.set_ex(rejected_key(version), 1, DEDUP_WINDOW.as_secs()).await?;
    Ok(())
}

/// Whether [`remember_rejected`] marked this object version.
pub async fn was_rejected(
    redis: &mut crate::redis::Conn,
    version: &str,
) -> Result<bool, RedisError> {
    Ok(redis.exists(rejected_key(version)).await?)
}

/// `version` is `<bucket>/<key>/<etag>`, hashed: any key is a safe Redis key part.
fn rejected_key(version: &str) -> String {
    use sha2::Digest as _;
    format!("{KEY_PREFIX}watch:rejected:{}", hex::encode(sha2::Sha256::digest(version.as_bytes())))
}

/// Every rule, by name.
pub async fn list(redis: &mut crate::redis::Conn) -> Result<Vec<WatchRule>, RedisError> {
    let raw: HashMap<String, String> = redis.hgetall(rules_key()).await?;
    let mut rules = Vec::with_capacity(raw.len());
    for (name, json) in raw {
        match serde_json::from_str(&json) {
            Ok(rule) => rules.push(rule),
            // One bad rule (stored before its prefix was refused, or by hand) must not stop
            // every folder from being watched; it matches nothing until replaced.
            Err(e) => tracing::warn!(rule = name, error = %e, "watch rule ignored"),
        }
    }
    rules.sort_by(|a: &WatchRule, b| a.name.cmp(&b.name));
    Ok(rules)
}

/// Adds or replaces a rule. Replacing one with the same prefix and tenant keeps its
/// creation time, so restarting ingest with `[[ingest.watch]]` does not widen what it sees.
pub async fn put(
    redis: &mut crate::redis::Conn,
    rule: &WatchRule,
) -> Result<WatchRule, RedisError> {
    let existing: Option<String> = redis.hget(rules_key(), &rule.name).await?;
    let mut rule = rule.clone();
    if let Some(earlier) = existing.and_then(|json| serde_json::from_str::<WatchRule>(&json).ok())
        && earlier.prefix == rule.prefix
        && earlier.tenant == rule.tenant
    {
        rule.created_at = earlier.created_at;
    }
    let json = serde_json::to_string(&rule).expect("a rule serializes");
    let _: i64 = redis.hset(rules_key(), &rule.name, json).await?;
    Ok(rule)
}

/// Removes a rule; whether it existed.
pub async fn remove(redis: &mut crate::redis::Conn, name: &str) -> Result<bool, RedisError> {
    let removed: i64 = redis.hdel(rules_key(), name).await?;
    Ok(removed == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, prefix: &str) -> WatchRule {
        WatchRuleRequest {
            name: name.into(),
            prefix: prefix.into(),
            tenant: "acme".into(),
            job: serde_json::json!({"preset": "hls"}),
        }
        .validate(1 << 30, &[])
        .unwrap()
    }

    #[test]
    fn the_longest_prefix_wins_and_folders_and_hidden_files_are_not_watched() {
        let rules = [rule("wide", "incoming/"), rule("narrow", "incoming/acme/")];
        let key = |k: &str| Key::parse(k).unwrap();
        assert_eq!(matching(&rules, &key("incoming/acme/a.mp4")).unwrap().name, "narrow");
        assert_eq!(matching(&rules, &key("incoming/other/a.mp4")).unwrap().name, "wide");
        for ignored in ["incoming/acme/.DS_Store", "elsewhere/a.mp4", "incoming"] {
            assert_eq!(matching(&rules, &key(ignored)), None, "{ignored}");
        }
    }

    #[test]
    fn rules_cannot_watch_tcoders_own_folders_or_describe_one_upload() {
        let request = |prefix: &str, job: serde_json::Value| WatchRuleRequest {
            name: "r".into(),
            prefix: prefix.into(),
            tenant: "acme".into(),
            job,
        };
        for prefix in [
            "outputs/",
            "outputs/acme/",
            "uploads/acme/",
            "o/",
            "",
            "incoming",
            "/x/",
            "incoming/../uploads/",
            "incoming/./",
            "incoming//",
            "incoming/%2e%2e/uploads/",
            "in\\coming/",
        ] {
            let refused = request(prefix, serde_json::json!({})).validate(1 << 30, &[]);
            // `o/` is a different folder from `outputs/`: only exact overlaps are refused.
            assert_eq!(refused.is_ok(), prefix == "o/", "{prefix}: {refused:?}");
        }
        let sized = request("in/", serde_json::json!({"content_length": 5})).validate(1 << 30, &[]);
        assert!(sized.unwrap_err().contains("content_length"));
        let typo = request("in/", serde_json::json!({"presett": "hls"})).validate(1 << 30, &[]);
        assert!(typo.unwrap_err().contains("presett"));
        let captioned = request(
            "in/",
            serde_json::json!({"captions": [{"language": "en", "key": "uploads/acme/en.srt"}]}),
        );
        assert!(captioned.validate(1 << 30, &[]).unwrap_err().contains("captions"));
    }
}
