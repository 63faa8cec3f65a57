//! What a user asks for: preset, qualities, outputs and delivery options, validated into a
//! [`JobSpec`] with stable error codes (they appear in problem+json responses and must not
//! change once clients depend on them).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Priority;
use super::captions::{self, CaptionRequest, CaptionSpec};
use crate::s3::multipart::SINGLE_PUT_MAX_BYTES;
use crate::webhooks;

/// Seed presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Stream copy into MP4 when no quality is asked for, else one quality.
    Default,
    /// H.264 + AAC, faststart MP4, one file per quality.
    WebOptimized,
    /// An HLS ABR ladder with a master playlist.
    Hls,
}

impl Preset {
    /// The name a request uses (and metrics label jobs with).
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Default => "default",
            Preset::WebOptimized => "web-optimized",
            Preset::Hls => "hls",
        }
    }
}

/// Named ladder rungs (the engine owns their exact dimensions and bitrates).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Quality {
    #[serde(rename = "144p")]
    P144,
    #[serde(rename = "360p")]
    P360,
    #[serde(rename = "720p")]
    P720,
    #[serde(rename = "1080p")]
    P1080,
}

impl Quality {
    pub const ALL: [Quality; 4] = [Quality::P144, Quality::P360, Quality::P720, Quality::P1080];

    pub fn as_str(self) -> &'static str {
        match self {
            Quality::P144 => "144p",
            Quality::P360 => "360p",
            Quality::P720 => "720p",
            Quality::P1080 => "1080p",
        }
    }

    /// Output height in pixels.
    pub fn height(self) -> u32 {
        match self {
            Quality::P144 => 144,
            Quality::P360 => 360,
            Quality::P720 => 720,
            Quality::P1080 => 1080,
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Explicit rungs, or `auto`: every rung at or below the source height (never upscaled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Qualities {
    Auto(AutoLadder),
    List(Vec<Quality>),
}

/// The literal `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutoLadder {
    Auto,
}

/// What gets written.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Mp4,
    Hls,
    Thumbnails,
    /// An animated WebP of a few seconds (`thumbs/preview.webp`), with the thumbnails.
    Preview,
}

/// Video codec of the renditions.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// H.264 / AVC (libx264): plays everywhere.
    #[default]
    H264,
    /// H.265 / HEVC (libx265).
    Hevc,
    /// AV1 (libsvtav1).
    Av1,
    /// VP9 (libvpx-vp9); MP4 only (not in HLS).
    Vp9,
}

/// Audio codec of the renditions.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AudioCodec {
    /// AAC-LC (FFmpeg's native encoder).
    #[default]
    Aac,
    /// Opus (libopus).
    Opus,
}

/// What becomes of a high-dynamic-range (PQ or HLG) source.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HdrMode {
    /// Tone-mapped to SDR BT.709: what every screen and player shows right.
    #[default]
    Tonemap,
    /// Kept HDR: 10-bit HEVC or AV1 with the source's transfer, primaries and mastering
    /// metadata, for players and screens that show HDR.
    Keep,
}

impl HdrMode {
    fn is_default(&self) -> bool {
        *self == HdrMode::Tonemap
    }
}

/// Loudness targets accepted for `loudness_target` (LUFS, integrated).
pub const LOUDNESS_TARGETS: std::ops::RangeInclusive<i8> = -40..=-5;
/// EBU R128's target, used when `normalize_audio` is asked without a target.
pub const DEFAULT_LOUDNESS_TARGET: i8 = -23;

/// Longest `filename` label, in characters.
const MAX_FILENAME: usize = 255;

/// A validated job request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobSpec {
    pub preset: Preset,
    pub qualities: Qualities,
    pub outputs: Vec<OutputKind>,
    #[serde(default)]
    pub video_codec: VideoCodec,
    #[serde(default)]
    pub audio_codec: AudioCodec,
    /// What becomes of an HDR source (SDR sources are never changed).
    #[serde(default, skip_serializing_if = "HdrMode::is_default")]
    pub hdr: HdrMode,
    /// Normalise the audio to this integrated loudness (LUFS, EBU R128), when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loudness_target: Option<i8>,
    /// Caption files named by the job (besides the source's own text subtitle tracks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captions: Vec<CaptionSpec>,
    /// Also carry every caption track in the MP4s, as MP4 timed text (`mov_text`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mp4_captions: bool,
    /// How the rungs' quality settings are chosen (docs/MEDIA.md, "Quality").
    #[serde(default)]
    #[schema(value_type = String, example = "standard")]
    pub quality: crate::engine::QualityGoal,
    /// The job's own quality floor (else the worker's `[worker.engine] quality_floor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_floor: Option<crate::engine::QualityFloor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Also deliver `progress` events to the webhook (terminal events always go).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub webhook_progress: bool,
    /// Also deliver the `playable` event to the webhook.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub webhook_playable: bool,
    pub priority: Priority,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The source's file name as the user knows it (a label: lists and players show it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Where ingest fetches the source from, instead of an upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    /// Declared source size in bytes; the presigned URL signs it and the upload must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// How the source is uploaded through the API: one presigned PUT, or parts.
    #[serde(default, skip_serializing_if = "UploadMethod::is_single")]
    pub upload: UploadMethod,
}

/// How a job's source reaches the store through the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UploadMethod {
    /// One presigned PUT (up to 5 GiB).
    #[default]
    Single,
    /// A multipart upload: a presigned PUT per part, resumable, then
    /// `POST /v1/jobs/{id}/upload/complete`.
    Multipart,
}

impl UploadMethod {
    fn is_single(&self) -> bool {
        *self == UploadMethod::Single
    }
}

/// The body of `POST /v1/jobs` before validation. Unknown fields are rejected so a typo
/// (`"qualites"`) is an error, not a silently ignored option. Names are read as strings (an
/// unknown one gets its field's typed error, not a JSON error) but described by their enums,
/// so generated clients keep the types. Serialisable for clients; absent fields are left out,
/// so the server's defaults apply.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Preset>)]
    pub preset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Qualities>)]
    pub qualities: Option<serde_json::Value>,
    /// Alias: `"ladder": "auto"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AutoLadder>)]
    pub ladder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<OutputKind>>)]
    pub outputs: Option<Vec<String>>,
    /// `h264` (default), `hevc`, `av1`, `vp9`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<VideoCodec>)]
    pub video_codec: Option<String>,
    /// `aac` (default), `opus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AudioCodec>)]
    pub audio_codec: Option<String>,
    /// HDR sources: `tonemap` (default; SDR BT.709 outputs every screen shows right) or
    /// `keep` (10-bit HDR outputs; needs `video_codec` `hevc` or `av1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<HdrMode>)]
    pub hdr: Option<String>,
    /// Normalise the audio's loudness (EBU R128) to `loudness_target`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalize_audio: Option<bool>,
    /// Integrated loudness to normalise to, in LUFS: -40 to -5 (default -23, EBU R128;
    /// -16 or -14 for the web). Implies `normalize_audio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loudness_target: Option<i64>,
    /// Caption files (SRT or WebVTT), each uploaded with the job (`upload: true`; the API
    /// returns a URL per file) or named by `key` under `uploads/<tenant>/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captions: Option<Vec<CaptionRequest>>,
    /// Also carry the caption tracks in the MP4s as MP4 timed text (`mov_text`), for players
    /// that read captions from the file (`QuickTime`, Safari, VLC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mp4_captions: Option<bool>,
    /// How each rung's quality setting is chosen: `standard` (default: per title, aiming at
    /// VMAF 93, or at most 0.5 below what `fixed` would give where that is higher), `high`
    /// (likewise, VMAF 96), `target:vmaf=<50-99>` (that VMAF exactly), or `fixed` (one
    /// setting for every title, no probe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    /// The lowest mean VMAF (0-100] a rendition may be measured at; below it the job fails
    /// with `engine.quality_below_floor`, or completes with a warning when
    /// `quality_floor_action` is `warn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality_floor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::engine::FloorAction>)]
    pub quality_floor_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Opt in to `progress` webhooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_progress: Option<bool>,
    /// Opt in to the `playable` webhook (the job's HLS plays from its `playback_url`, while
    /// the rest of a long title still encodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_playable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Priority>)]
    pub priority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The source's file name as the user knows it (`holiday.mov`): a label shown in lists,
    /// at most 255 characters, no control characters. Default for a `source_url`: the URL's
    /// last path segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Fetch the source from this `https://` URL instead of uploading it (at most 2048
    /// bytes; public addresses only, redirects checked again). Not with `content_length` or
    /// `upload`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    /// The source's size in bytes. Above `ingest.multipart_threshold` (default 100 MiB) the
    /// upload is multipart unless `upload` says `single`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `single` (one presigned PUT, at most 5 GiB) or `multipart` (a PUT per part, resumable;
    /// needs `content_length`). Default: by `content_length`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<UploadMethod>)]
    pub upload: Option<String>,
}

/// Limits applied while validating, and who is asking through which door.
#[derive(Debug, Clone, Copy)]
pub struct SpecLimits<'a> {
    pub max_upload_bytes: u64,
    /// Non-public webhook destinations allowed (`[webhooks] allowed`).
    pub allowed_webhooks: &'a [std::net::SocketAddr],
    /// The tenant the job is for: objects it names must be its own.
    pub tenant: &'a super::Tenant,
    /// Whether this door hands out presigned upload URLs (the HTTP API does; a NATS
    /// submission names objects already in the bucket).
    pub presigned: bool,
    /// A declared `content_length` above this gets a multipart upload (presigned doors).
    pub multipart_threshold: u64,
    /// Whether and where a `source_url` may point (`None`: not through this door).
    pub import: Option<ImportRules<'a>>,
}

/// Where a job's `source_url` may point: `https://` (and `http://` when allowed), public
/// addresses only unless an exact `ip:port` is listed (`[ingest.import]`).
#[derive(Debug, Clone, Copy)]
pub struct ImportRules<'a> {
    pub allow_http: bool,
    pub allowed: &'a [std::net::SocketAddr],
}

/// A request that cannot become a job; `code` is stable, `field` names the JSON field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub code: &'static str,
    pub field: &'static str,
    pub message: String,
}

pub(crate) fn invalid(
    code: &'static str,
    field: &'static str,
    message: impl Into<String>,
) -> SpecError {
    SpecError { code, field, message: message.into() }
}

const MAX_METADATA_ENTRIES: usize = 32;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;
/// Longer URLs are not ones a receiver serves, and each is stored with the job and sent with
/// every event (a 1.9 MB one was accepted before).
const MAX_WEBHOOK_URL: usize = 2048;

impl JobSpec {
    /// Validates a request into a spec, filling in the preset's defaults.
    pub fn from_request(request: JobRequest, limits: SpecLimits<'_>) -> Result<JobSpec, SpecError> {
        let preset = match request.preset.as_deref() {
            None => Preset::Default,
            Some(name) => serde_json::from_value(serde_json::Value::String(name.to_owned()))
                .map_err(|_| {
                    invalid(
                        "validation.unknown_preset",
                        "preset",
                        format!("unknown preset `{name}` (default, web-optimized, hls)"),
                    )
                })?,
        };
        let qualities = parse_qualities(preset, request.qualities, request.ladder)?;
        let outputs = parse_outputs(preset, request.outputs)?;
        let video_codec: VideoCodec = parse_name(
            request.video_codec.as_deref(),
            "validation.codec",
            "video_codec",
            "h264, hevc, av1, vp9",
        )?;
        let audio_codec: AudioCodec = parse_name(
            request.audio_codec.as_deref(),
            "validation.codec",
            "audio_codec",
            "aac, opus",
        )?;
        if video_codec == VideoCodec::Vp9 && outputs.contains(&OutputKind::Hls) {
            return Err(invalid(
                "validation.codec",
                "video_codec",
                "vp9 is not supported in HLS; use h264, hevc or av1",
            ));
        }
        if preset == Preset::WebOptimized
            && (video_codec != VideoCodec::H264 || audio_codec != AudioCodec::Aac)
        {
            return Err(invalid("validation.codec", "video_codec", "web-optimized is H.264 + AAC"));
        }
        let hdr: HdrMode =
            parse_name(request.hdr.as_deref(), "validation.hdr", "hdr", "tonemap, keep")?;
        if hdr == HdrMode::Keep && !matches!(video_codec, VideoCodec::Hevc | VideoCodec::Av1) {
            return Err(invalid(
                "validation.codec",
                "hdr",
                "keeping HDR needs video_codec hevc or av1 (H.264 and VP9 outputs are SDR)",
            ));
        }
        let loudness_target = match (request.normalize_audio, request.loudness_target) {
            (Some(false), Some(_)) => {
                return Err(invalid(
                    "validation.loudness",
                    "loudness_target",
                    "a loudness target with normalize_audio false",
                ));
            }
            (_, Some(target)) => Some(
                i8::try_from(target).ok().filter(|t| LOUDNESS_TARGETS.contains(t)).ok_or_else(
                    || {
                        invalid(
                            "validation.loudness",
                            "loudness_target",
                            format!(
                                "must be between {} and {} LUFS",
                                LOUDNESS_TARGETS.start(),
                                LOUDNESS_TARGETS.end()
                            ),
                        )
                    },
                )?,
            ),
            (Some(true), None) => Some(DEFAULT_LOUDNESS_TARGET),
            _ => None,
        };
        let priority = match request.priority.as_deref() {
            None => Priority::Normal,
            Some(p) => {
                p.parse().map_err(|e: String| invalid("validation.priority", "priority", e))?
            }
        };
        if let Some(url) = &request.webhook_url {
            if url.len() > MAX_WEBHOOK_URL {
                return Err(invalid(
                    "validation.webhook_url",
                    "webhook_url",
                    format!("longer than {MAX_WEBHOOK_URL} bytes"),
                ));
            }
            // The URL parser strips tabs and newlines; the stored string would keep them.
            if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(invalid(
                    "validation.webhook_url",
                    "webhook_url",
                    "contains whitespace or a control character",
                ));
            }
            webhooks::check_url(url, limits.allowed_webhooks)
                .map_err(|e| invalid("validation.webhook_url", "webhook_url", e.to_string()))?;
        }
        let captions = captions::parse(request.captions.unwrap_or_default(), &limits)?;
        let mp4_captions = request.mp4_captions.unwrap_or(false);
        if mp4_captions && !outputs.contains(&OutputKind::Mp4) {
            return Err(invalid(
                "validation.outputs",
                "mp4_captions",
                "mp4_captions needs the mp4 output",
            ));
        }
        let quality = match request.quality.as_deref() {
            None => crate::engine::QualityGoal::default(),
            Some(text) => crate::engine::QualityGoal::parse(text)
                .map_err(|e| invalid("validation.quality", "quality", e))?,
        };
        let action: Option<crate::engine::FloorAction> = match request.quality_floor_action {
            None => None,
            Some(name) => Some(parse_name(
                Some(&name),
                "validation.quality",
                "quality_floor_action",
                "fail, warn",
            )?),
        };
        let quality_floor = match (request.quality_floor, action) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(invalid(
                    "validation.quality",
                    "quality_floor_action",
                    "needs quality_floor",
                ));
            }
            (Some(vmaf), action) => Some(crate::engine::QualityFloor {
                vmaf: crate::engine::QualityFloor::validate(vmaf)
                    .map_err(|e| invalid("validation.quality", "quality_floor", e))?,
                action: action.unwrap_or_default(),
            }),
        };
        let upload = upload_method(request.upload.as_deref(), request.content_length, &limits)?;
        let metadata = request.metadata.unwrap_or_default();
        check_metadata(&metadata)?;
        if let Some(length) = request.content_length
            && (length == 0 || length > limits.max_upload_bytes)
        {
            return Err(invalid(
                "validation.content_length",
                "content_length",
                format!("must be between 1 and {} bytes", limits.max_upload_bytes),
            ));
        }
        let source_url = match &request.source_url {
            None => None,
            Some(raw) => Some(check_source_url(raw, limits.import)?),
        };
        if source_url.is_some() && (request.content_length.is_some() || request.upload.is_some()) {
            return Err(invalid(
                "validation.source_url",
                "source_url",
                "a job with a source_url measures its source itself: leave out content_length \
                 and upload",
            ));
        }
        let filename = request.filename.or_else(|| source_url.as_ref().and_then(url_filename));
        if let Some(name) = &filename
            && (name.trim().is_empty()
                || name.chars().count() > MAX_FILENAME
                || name.chars().any(char::is_control))
        {
            return Err(invalid(
                "validation.filename",
                "filename",
                format!("1-{MAX_FILENAME} characters, no control characters"),
            ));
        }
        if let Some(content_type) = &request.content_type {
            let valid = !content_type.is_empty()
                && content_type.len() <= 128
                && content_type.contains('/')
                && content_type.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
            if !valid {
                return Err(invalid("validation.content_type", "content_type", "not a MIME type"));
            }
        }
        Ok(JobSpec {
            preset,
            qualities,
            outputs,
            video_codec,
            audio_codec,
            hdr,
            loudness_target,
            captions,
            mp4_captions,
            quality,
            quality_floor,
            webhook_url: request.webhook_url,
            webhook_progress: request.webhook_progress.unwrap_or(false),
            webhook_playable: request.webhook_playable.unwrap_or(false),
            priority,
            metadata,
            filename,
            source_url: source_url.map(String::from),
            content_length: request.content_length,
            content_type: request.content_type,
            upload,
        })
    }

    /// A digest of everything the user asked for: the same `Idempotency-Key` with a different
    /// fingerprint is a conflict, not a replay.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a spec always serializes");
        hex::encode(Sha256::digest(canonical))
    }
}

/// Longest `source_url`, in bytes.
const MAX_SOURCE_URL: usize = 2048;

/// A `source_url` as this door takes it: parsed, no whitespace or control characters (the URL
/// parser drops some; the stored string would keep them), an allowed scheme, and no literal
/// address that is not public (names are resolved and checked again when fetched).
fn check_source_url(raw: &str, rules: Option<ImportRules<'_>>) -> Result<url::Url, SpecError> {
    let refuse = |why: String| invalid("validation.source_url", "source_url", why);
    let rules = rules.ok_or_else(|| {
        refuse("a source_url is taken by POST /v1/jobs only (with [ingest.import] enabled)".into())
    })?;
    if raw.len() > MAX_SOURCE_URL {
        return Err(refuse(format!("longer than {MAX_SOURCE_URL} bytes")));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(refuse("contains whitespace or a control character".into()));
    }
    let url = webhooks::check_url(raw, rules.allowed).map_err(|e| refuse(e.to_string()))?;
    if url.scheme() != "https" && !rules.allow_http {
        return Err(refuse("must be https:// ([ingest.import] allow_http is off)".into()));
    }
    Ok(url)
}

/// The last segment of a URL's path, as a file name label (`clip.mp4`), when it has one.
fn url_filename(url: &url::Url) -> Option<String> {
    let last = url.path_segments()?.next_back()?;
    let decoded = percent_encoding::percent_decode_str(last).decode_utf8_lossy();
    let name: String =
        decoded.chars().filter(|c| !c.is_control()).take(MAX_FILENAME).collect::<String>();
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// How the source is uploaded: as asked, else multipart when the declared length is above the
/// threshold. One PUT carries at most [`SINGLE_PUT_MAX_BYTES`]; parts need the length up
/// front (the plan of parts is made from it).
fn upload_method(
    asked: Option<&str>,
    length: Option<u64>,
    limits: &SpecLimits<'_>,
) -> Result<UploadMethod, SpecError> {
    let method = match asked {
        None => match length {
            Some(length) if limits.presigned && length > limits.multipart_threshold => {
                UploadMethod::Multipart
            }
            _ => UploadMethod::Single,
        },
        Some(_) if !limits.presigned => {
            return Err(invalid(
                "validation.upload",
                "upload",
                "only jobs created with POST /v1/jobs upload their source",
            ));
        }
        Some("single") => UploadMethod::Single,
        Some("multipart") => UploadMethod::Multipart,
        Some(_) => {
            return Err(invalid("validation.upload", "upload", "must be single or multipart"));
        }
    };
    match (method, length) {
        (UploadMethod::Multipart, None) => Err(invalid(
            "validation.content_length",
            "content_length",
            "a multipart upload needs the source's content_length",
        )),
        (UploadMethod::Single, Some(length))
            if limits.presigned && length > SINGLE_PUT_MAX_BYTES =>
        {
            Err(invalid(
                "validation.content_length",
                "content_length",
                format!(
                    "one PUT carries at most {SINGLE_PUT_MAX_BYTES} bytes; use upload: multipart"
                ),
            ))
        }
        _ => Ok(method),
    }
}

/// Parses an optional lowercase name into a serde enum (default when absent).
fn parse_name<T: serde::de::DeserializeOwned + Default>(
    value: Option<&str>,
    code: &'static str,
    field: &'static str,
    expected: &str,
) -> Result<T, SpecError> {
    match value {
        None => Ok(T::default()),
        Some(name) => serde_json::from_value(serde_json::Value::String(name.to_owned()))
            .map_err(|_| invalid(code, field, format!("unknown {field} `{name}` ({expected})"))),
    }
}

fn parse_qualities(
    preset: Preset,
    qualities: Option<serde_json::Value>,
    ladder: Option<String>,
) -> Result<Qualities, SpecError> {
    let parsed = match (qualities, ladder.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "validation.qualities",
                "qualities",
                "give either qualities or ladder, not both",
            ));
        }
        (None, Some("auto")) => Some(Qualities::Auto(AutoLadder::Auto)),
        (None, Some(other)) => {
            return Err(invalid(
                "validation.qualities",
                "ladder",
                format!("unknown ladder `{other}` (auto)"),
            ));
        }
        (Some(value), None) => Some(serde_json::from_value::<Qualities>(value).map_err(|_| {
            invalid(
                "validation.unknown_quality",
                "qualities",
                "expected \"auto\" or a list of 144p, 360p, 720p, 1080p",
            )
        })?),
        (None, None) => None,
    };
    let qualities = match (parsed, preset) {
        (Some(q), _) => q,
        (None, Preset::Default) => Qualities::List(Vec::new()),
        (None, Preset::WebOptimized | Preset::Hls) => Qualities::Auto(AutoLadder::Auto),
    };
    match &qualities {
        Qualities::List(list) => {
            let mut seen = list.clone();
            seen.sort();
            seen.dedup();
            if seen.len() != list.len() {
                return Err(invalid(
                    "validation.qualities",
                    "qualities",
                    "a quality is listed twice",
                ));
            }
            if preset == Preset::Default && list.len() > 1 {
                return Err(invalid(
                    "validation.too_many_qualities",
                    "qualities",
                    "the default preset makes at most one quality; use web-optimized or hls for several",
                ));
            }
            if preset != Preset::Default && list.is_empty() {
                return Err(invalid(
                    "validation.qualities",
                    "qualities",
                    "list at least one quality, or \"auto\"",
                ));
            }
        }
        Qualities::Auto(_) if preset == Preset::Default => {
            return Err(invalid(
                "validation.too_many_qualities",
                "qualities",
                "the default preset makes at most one quality; use web-optimized or hls for a ladder",
            ));
        }
        Qualities::Auto(_) => {}
    }
    Ok(qualities)
}

fn parse_outputs(
    preset: Preset,
    outputs: Option<Vec<String>>,
) -> Result<Vec<OutputKind>, SpecError> {
    let mut outputs = match outputs {
        None => match preset {
            Preset::Default => vec![OutputKind::Mp4],
            Preset::WebOptimized => vec![OutputKind::Mp4, OutputKind::Thumbnails],
            Preset::Hls => vec![OutputKind::Hls, OutputKind::Thumbnails],
        },
        Some(names) => names
            .iter()
            .map(|name| {
                serde_json::from_value(serde_json::Value::String(name.clone())).map_err(|_| {
                    invalid(
                        "validation.unknown_output",
                        "outputs",
                        format!("unknown output `{name}` (mp4, hls, thumbnails, preview)"),
                    )
                })
            })
            .collect::<Result<Vec<OutputKind>, _>>()?,
    };
    // The preview is taken with the thumbnails.
    if outputs.contains(&OutputKind::Preview) {
        outputs.push(OutputKind::Thumbnails);
    }
    outputs.sort();
    outputs.dedup();
    if !outputs.iter().any(|o| matches!(o, OutputKind::Mp4 | OutputKind::Hls)) {
        return Err(invalid("validation.outputs", "outputs", "include mp4 or hls"));
    }
    if preset == Preset::Hls && !outputs.contains(&OutputKind::Hls) {
        return Err(invalid("validation.outputs", "outputs", "the hls preset writes hls"));
    }
    if preset == Preset::Default && outputs.contains(&OutputKind::Hls) {
        return Err(invalid("validation.outputs", "outputs", "use the hls preset for hls output"));
    }
    Ok(outputs)
}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), SpecError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(invalid(
            "validation.metadata",
            "metadata",
            format!("at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.len() > MAX_METADATA_KEY || value.len() > MAX_METADATA_VALUE {
            return Err(invalid(
                "validation.metadata",
                "metadata",
                format!("keys are 1-{MAX_METADATA_KEY} bytes, values at most {MAX_METADATA_VALUE}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{FloorAction, QualityFloor, QualityGoal};

    fn request(json: serde_json::Value) -> Result<JobSpec, SpecError> {
        let tenant = super::super::Tenant::parse("acme").unwrap();
        let limits = SpecLimits {
            max_upload_bytes: 1 << 30,
            allowed_webhooks: &[],
            tenant: &tenant,
            presigned: true,
            multipart_threshold: u64::MAX,
            import: None,
        };
        JobSpec::from_request(serde_json::from_value(json).unwrap(), limits)
    }

    #[test]
    fn presets_fill_in_their_defaults() {
        let spec = request(serde_json::json!({})).unwrap();
        assert_eq!(
            (spec.preset, spec.qualities, spec.outputs),
            (Preset::Default, Qualities::List(vec![]), vec![OutputKind::Mp4])
        );
        let spec = request(serde_json::json!({"preset": "hls"})).unwrap();
        assert_eq!(spec.qualities, Qualities::Auto(AutoLadder::Auto));
        assert_eq!(spec.outputs, vec![OutputKind::Hls, OutputKind::Thumbnails]);
        let spec =
            request(serde_json::json!({"preset": "web-optimized", "ladder": "auto"})).unwrap();
        assert_eq!(spec.qualities, Qualities::Auto(AutoLadder::Auto));
        let spec = request(
            serde_json::json!({"preset": "hls", "qualities": ["720p", "144p"], "priority": "high"}),
        )
        .unwrap();
        assert_eq!(spec.qualities, Qualities::List(vec![Quality::P720, Quality::P144]));
        assert_eq!(spec.priority, Priority::High);
    }

    #[test]
    fn invalid_requests_get_stable_codes() {
        let cases = [
            (serde_json::json!({"preset": "4k"}), "validation.unknown_preset"),
            (serde_json::json!({"qualities": ["480p"]}), "validation.unknown_quality"),
            (serde_json::json!({"qualities": ["360p", "720p"]}), "validation.too_many_qualities"),
            (
                serde_json::json!({"preset": "hls", "qualities": ["360p", "360p"]}),
                "validation.qualities",
            ),
            (serde_json::json!({"outputs": ["gif"]}), "validation.unknown_output"),
            (serde_json::json!({"preset": "hls", "outputs": ["mp4"]}), "validation.outputs"),
            (
                serde_json::json!({"webhook_url": "http://169.254.169.254/"}),
                "validation.webhook_url",
            ),
            (
                serde_json::json!({"webhook_url": format!("https://example.com/{}", "a".repeat(2048))}),
                "validation.webhook_url",
            ),
            // The URL parser drops CR/LF and tabs; the stored string would keep them.
            (
                serde_json::json!({"webhook_url": "https://example.com/ho\r\nok"}),
                "validation.webhook_url",
            ),
            (
                serde_json::json!({"webhook_url": "https://example.com/ho\tok"}),
                "validation.webhook_url",
            ),
            (serde_json::json!({"content_length": 0}), "validation.content_length"),
            (serde_json::json!({"filename": "a\nb.mp4"}), "validation.filename"),
            (serde_json::json!({"filename": " "}), "validation.filename"),
            (serde_json::json!({"filename": "é".repeat(256)}), "validation.filename"),
            (serde_json::json!({"priority": "urgent"}), "validation.priority"),
            (serde_json::json!({"content_type": "video\r\nx"}), "validation.content_type"),
            (serde_json::json!({"video_codec": "mpeg2"}), "validation.codec"),
            (serde_json::json!({"preset": "hls", "video_codec": "vp9"}), "validation.codec"),
            (serde_json::json!({"hdr": "keep"}), "validation.codec"),
            (serde_json::json!({"hdr": "keep", "video_codec": "vp9"}), "validation.codec"),
            (serde_json::json!({"hdr": "dolby"}), "validation.hdr"),
            (serde_json::json!({"loudness_target": -3}), "validation.loudness"),
            (serde_json::json!({"loudness_target": -300}), "validation.loudness"),
            (
                serde_json::json!({"normalize_audio": false, "loudness_target": -16}),
                "validation.loudness",
            ),
            (serde_json::json!({"preset": "hls", "mp4_captions": true}), "validation.outputs"),
            (
                serde_json::json!({"captions": [{"language": "en", "key": "uploads/globex/en.srt"}]}),
                "validation.captions",
            ),
            (serde_json::json!({"quality": "ultra"}), "validation.quality"),
            (serde_json::json!({"quality": "target:vmaf=NaN"}), "validation.quality"),
            (serde_json::json!({"quality": "target:vmaf=1e2"}), "validation.quality"),
            (serde_json::json!({"quality": "target:vmaf=100"}), "validation.quality"),
            (serde_json::json!({"quality": "target:ssim=0.9"}), "validation.quality"),
            (serde_json::json!({"quality_floor": -1.0}), "validation.quality"),
            (serde_json::json!({"quality_floor": 0.0}), "validation.quality"),
            (serde_json::json!({"quality_floor": 101.0}), "validation.quality"),
            (serde_json::json!({"quality_floor_action": "warn"}), "validation.quality"),
            (
                serde_json::json!({"quality_floor": 80.0, "quality_floor_action": "ignore"}),
                "validation.quality",
            ),
        ];
        for (json, code) in cases {
            assert_eq!(request(json.clone()).unwrap_err().code, code, "{json}");
        }
    }

    #[test]
    fn quality_goal_and_floor() {
        let spec = request(serde_json::json!({"preset": "hls"})).unwrap();
        assert_eq!((spec.quality, spec.quality_floor), (QualityGoal::Standard, None));
        let spec = request(serde_json::json!({
            "quality": "target:vmaf=95.5", "quality_floor": 80, "quality_floor_action": "warn"
        }))
        .unwrap();
        assert_eq!(spec.quality, QualityGoal::Target(95.5));
        assert_eq!(
            spec.quality_floor,
            Some(QualityFloor { vmaf: 80.0, action: FloorAction::Warn })
        );
        let spec = request(serde_json::json!({"quality": "fixed", "quality_floor": 70})).unwrap();
        assert_eq!(spec.quality, QualityGoal::Fixed);
        assert_eq!(spec.quality_floor.map(|f| f.action), Some(FloorAction::Fail));
        // Stored and read back as it was asked.
        let stored: JobSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(stored, spec);
    }

    #[test]
    fn hdr_and_loudness_options() {
        let spec = request(serde_json::json!({"preset": "hls"})).unwrap();
        assert_eq!((spec.hdr, spec.loudness_target), (HdrMode::Tonemap, None));
        let spec = request(
            serde_json::json!({"preset": "hls", "video_codec": "hevc", "hdr": "keep", "normalize_audio": true}),
        )
        .unwrap();
        assert_eq!((spec.hdr, spec.loudness_target), (HdrMode::Keep, Some(-23)));
        let spec = request(serde_json::json!({"loudness_target": -16})).unwrap();
        assert_eq!(spec.loudness_target, Some(-16));
        // Defaults stay out of the stored spec (fingerprints of older jobs do not change).
        let json = serde_json::to_value(request(serde_json::json!({})).unwrap()).unwrap();
        assert!(json.get("hdr").is_none() && json.get("loudness_target").is_none(), "{json}");
    }

    #[test]
    fn fingerprint_changes_with_parameters_only() {
        let a = request(serde_json::json!({"preset": "hls"})).unwrap();
        let b = request(serde_json::json!({"preset": "hls"})).unwrap();
        let c = request(serde_json::json!({"preset": "hls", "priority": "low"})).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn the_upload_method_follows_the_length_and_the_door() {
        let tenant = super::super::Tenant::parse("acme").unwrap();
        let door = |presigned: bool, json: serde_json::Value| {
            let limits = SpecLimits {
                max_upload_bytes: 60 << 30,
                allowed_webhooks: &[],
                tenant: &tenant,
                presigned,
                multipart_threshold: 100 << 20,
                import: None,
            };
            JobSpec::from_request(serde_json::from_value(json).unwrap(), limits)
        };
        let method = |json| door(true, json).map(|spec| spec.upload).map_err(|e| e.code);
        use serde_json::json;
        assert_eq!(method(json!({})), Ok(UploadMethod::Single));
        assert_eq!(method(json!({"content_length": 100u64 << 20})), Ok(UploadMethod::Single));
        let over = (100u64 << 20) + 1;
        assert_eq!(method(json!({"content_length": over})), Ok(UploadMethod::Multipart));
        let asked = json!({"content_length": over, "upload": "single"});
        assert_eq!(method(asked), Ok(UploadMethod::Single));
        let asked = json!({"content_length": 10, "upload": "multipart"});
        assert_eq!(method(asked), Ok(UploadMethod::Multipart));
        let too_big_for_one = json!({"content_length": (5u64 << 30) + 1, "upload": "single"});
        assert_eq!(method(too_big_for_one), Err("validation.content_length"));
        assert_eq!(method(json!({"upload": "multipart"})), Err("validation.content_length"));
        assert_eq!(method(json!({"upload": "Multipart"})), Err("validation.upload"));
        // A NATS submission names an object already in the bucket: nothing to upload.
        let submitted = door(false, json!({"content_length": over, "upload": "multipart"}));
        assert_eq!(submitted.map_err(|e| e.code), Err("validation.upload"));
        let submitted = door(false, json!({"content_length": 6u64 << 30})).unwrap();
        assert_eq!(submitted.upload, UploadMethod::Single);
        // A single-PUT job's stored spec (and fingerprint) is what it was before parts existed.
        let spec = door(true, json!({"content_length": 10})).unwrap();
        assert!(!serde_json::to_string(&spec).unwrap().contains("upload"));
    }
}
