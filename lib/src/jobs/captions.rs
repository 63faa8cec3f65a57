//! Caption files a job names (sidecars): SRT or WebVTT, uploaded with the job to a presigned
//! URL at a key the server chooses, or an object the tenant already has under its uploads.
//!
//! Why both: an app that records or uploads in the browser has the caption file in hand when
//! it creates the job (an upload); a producer that writes to the bucket itself names the
//! object, as it names the source. Either way the key that is read is a canonical [`Key`] in
//! the tenant's own uploads folder — a spelling that could name another tenant's object never
//! becomes a spec.

use serde::{Deserialize, Serialize};

use super::spec::{SpecError, SpecLimits, invalid};
use crate::engine::{TrackLanguage, TrackName};
use crate::s3::{Key, keys};

/// Caption files one job may name.
pub const MAX_SIDECARS: usize = 8;
/// Largest caption file read (an SRT of a three-hour film is ~200 KB).
pub const MAX_SIDECAR_BYTES: u64 = 4 << 20;

/// One caption file of a job, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaptionSpec {
    pub language: TrackLanguage,
    /// What players list it as; the language's name when not given.
    pub name: TrackName,
    /// Shown without the viewer asking.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// Shown even to viewers who turned captions off (foreign-language lines).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    pub file: CaptionFile,
}

/// Where a caption file comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptionFile {
    /// Uploaded to a presigned URL the job's creation returned, at
    /// `uploads/<tenant>/<job>/captions/<n>` (`n`: its place among the job's uploads).
    Upload(usize),
    /// An object already in the tenant's uploads folder.
    Object(CaptionObject),
}

/// A caption file that is an object already in the tenant's uploads folder. A named type (not
/// an inline struct variant), so OpenAPI clients generate one model for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaptionObject {
    #[schema(value_type = String)]
    pub key: Key,
}

/// One entry of a request's `captions` before validation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptionRequest {
    /// The captions' language: an ISO 639-1 or 639-2 code (`en`, `fra`, `pt-BR`).
    pub language: String,
    /// What players list it as (default: the language's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forced: Option<bool>,
    /// `true`: the job's creation returns a presigned URL to upload the file to (the API only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<bool>,
    /// An object under `uploads/<tenant>/` holding the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Validates a request's `captions`.
pub(crate) fn parse(
    requests: Vec<CaptionRequest>,
    limits: &SpecLimits<'_>,
) -> Result<Vec<CaptionSpec>, SpecError> {
    let bad = |message: String| invalid("validation.captions", "captions", message);
    if requests.len() > MAX_SIDECARS {
        return Err(bad(format!("at most {MAX_SIDECARS} caption files")));
    }
    let mut captions = Vec::with_capacity(requests.len());
    let mut uploads = 0;
    for (n, request) in requests.into_iter().enumerate() {
        let language = TrackLanguage::parse(&request.language).ok_or_else(|| {
            bad(format!(
                "captions[{n}].language: `{}` is not an ISO 639 language code",
                request.language.chars().take(16).collect::<String>()
            ))
        })?;
        let name = match &request.name {
            Some(name) => TrackName::clean(name)
                .ok_or_else(|| bad(format!("captions[{n}].name: nothing printable")))?,
            None => TrackName::clean(language.english_name().unwrap_or(language.as_str()))
                .expect("a language code is a clean name"),
        };
        let file = match (request.upload, request.key) {
            (Some(true), None) if limits.presigned => {
                uploads += 1;
                CaptionFile::Upload(uploads - 1)
            }
            (Some(true), None) => {
                return Err(bad(format!(
                    "captions[{n}]: only a job created over the API gets upload URLs; name the \
                     object with `key`"
                )));
            }
            (None | Some(false), Some(key)) => {
                CaptionFile::Object(CaptionObject { key: owned_key(&key, limits, n)? })
            }
            _ => return Err(bad(format!("captions[{n}]: give either `upload: true` or `key`"))),
        };
        captions.push(CaptionSpec {
            language,
            name,
            default: request.default.unwrap_or(false),
            forced: request.forced.unwrap_or(false),
            file,
        });
    }
    if captions.iter().filter(|c| c.default).count() > 1 {
        return Err(bad("at most one caption file is the default".into()));
    }
    let mut names: Vec<&str> = captions.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    if names.len() != captions.len() {
        return Err(bad("two caption files have the same name; name them apart".into()));
    }
    Ok(captions)
}

/// A caption object's key: canonical, and in the tenant's own uploads folder.
fn owned_key(spelling: &str, limits: &SpecLimits<'_>, n: usize) -> Result<Key, SpecError> {
    let key = Key::parse(spelling).map_err(|e| {
        invalid("validation.captions", "captions", format!("captions[{n}].key: {e}"))
    })?;
    let folder = keys::tenant_uploads(limits.tenant);
    if !key.is_in(&folder) {
        return Err(invalid(
            "validation.captions",
            "captions",
            format!("captions[{n}].key must name an object under `{folder}`"),
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::Tenant;

    fn limits(tenant: &Tenant, presigned: bool) -> SpecLimits<'_> {
        SpecLimits {
            max_upload_bytes: 1 << 30,
            allowed_webhooks: &[],
            tenant,
            presigned,
            multipart_threshold: u64::MAX,
            import: None,
        }
    }

    fn one(json: serde_json::Value, presigned: bool) -> Result<Vec<CaptionSpec>, SpecError> {
        let tenant = Tenant::parse("acme").unwrap();
        parse(serde_json::from_value(json).unwrap(), &limits(&tenant, presigned))
    }

    #[test]
    fn uploads_are_numbered_and_names_come_from_the_language() {
        let captions = one(
            serde_json::json!([
                {"language": "eng", "upload": true},
                {"language": "fr", "name": "Français (SDH)", "key": "uploads/acme/subs/fr.srt", "default": true},
                {"language": "de", "upload": true, "forced": true},
            ]),
            true,
        )
        .unwrap();
        assert_eq!(captions[0].language.as_str(), "en");
        assert_eq!(captions[0].name.as_str(), "English");
        assert_eq!(captions[0].file, CaptionFile::Upload(0));
        let key = Key::parse("uploads/acme/subs/fr.srt").unwrap();
        assert_eq!(captions[1].file, CaptionFile::Object(CaptionObject { key }));
        assert!(captions[1].default && !captions[1].forced);
        assert_eq!(captions[2].file, CaptionFile::Upload(1));
        assert!(captions[2].forced);
    }

    #[test]
    fn keys_of_other_tenants_or_in_other_spellings_are_refused() {
        for key in [
            "uploads/globex/subs/en.srt",
            "uploads/acmex/en.srt",
            "outputs/acme/job/1/captions/subtitles-0.vtt",
            "uploads/acme/../globex/en.srt",
            "uploads/acme/%2e%2e/globex/en.srt",
            "uploads/acme//en.srt",
            "uploads/acme/./en.srt",
            "uploads/acme\\..\\globex\\en.srt",
            "https://example.com/en.srt",
            "/uploads/acme/en.srt",
        ] {
            let error = one(serde_json::json!([{"language": "en", "key": key}]), true).unwrap_err();
            assert_eq!(error.code, "validation.captions", "{key}");
        }
    }

    #[test]
    fn malformed_entries_get_the_captions_code() {
        let too_many: Vec<_> = (0..=MAX_SIDECARS)
            .map(|_| serde_json::json!({"language": "en", "upload": true}))
            .collect();
        for (json, presigned) in [
            (serde_json::json!([{"language": "english", "upload": true}]), true),
            (serde_json::json!([{"language": "und", "upload": true}]), true),
            (serde_json::json!([{"language": "en"}]), true),
            (
                serde_json::json!([{"language": "en", "upload": true, "key": "uploads/acme/a"}]),
                true,
            ),
            (serde_json::json!([{"language": "en", "upload": true}]), false),
            (serde_json::json!([{"language": "en", "name": "\"\u{7}", "upload": true}]), true),
            (
                serde_json::json!([{"language": "en", "upload": true, "default": true},
                                   {"language": "fr", "upload": true, "default": true}]),
                true,
            ),
            (
                serde_json::json!([{"language": "en", "upload": true},
                                   {"language": "en", "upload": true}]),
                true,
            ),
            (serde_json::Value::Array(too_many), true),
        ] {
            assert_eq!(
                one(json.clone(), presigned).unwrap_err().code,
                "validation.captions",
                "{json}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever a tenant spells, a key that validates lies in its own uploads folder.
        #[test]
        fn a_valid_caption_key_is_always_the_tenants_own(suffix in "[a-z./%\\\\25eEfF]{0,24}") {
            let key = format!("uploads/acme/{suffix}");
            if let Ok(captions) = one(serde_json::json!([{"language": "en", "key": key}]), true) {
                let CaptionFile::Object(CaptionObject { key }) = &captions[0].file else { panic!("an object") };
                let folder = keys::tenant_uploads(&Tenant::parse("acme").unwrap());
                proptest::prop_assert!(key.is_in(&folder));
                // Nor does any layer that decodes it once or twice see a dot segment.
                let once = percent_encoding::percent_decode_str(key.as_str()).decode_utf8_lossy();
                let twice = percent_encoding::percent_decode_str(&once).decode_utf8_lossy();
                for spelling in [key.as_str(), &once, &twice] {
                    let dots = spelling.split(['/', '\\']).any(|s| s == ".." || s == ".");
                    proptest::prop_assert!(!dots, "{}", spelling);
                }
            }
        }
    }
}
