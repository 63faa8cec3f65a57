//! What a completed job delivers. One type, so the worker that writes it and everyone who
//! reads it agree on every field, in two forms:
//!
//! - the **manifest**, `manifest.json` next to the outputs: the result with every stored file
//!   (an HLS ladder of a long video has thousands of segments);
//! - the **summary** stored on the job, carried by the `completed` event and webhook and shown
//!   by `GET /v1/jobs/{id}`: the same without the file list, plus the manifest's URL — bounded
//!   whatever the video's length (NATS refuses payloads over 1 MiB).

use serde::{Deserialize, Serialize};

use crate::cost::JobCost;
use crate::engine::{
    AudioTrackReport, CaptionReport, ColourInfo, DynamicRange, EngineReport, LoudnessReport, Mode,
    Orientation,
};

/// The result of a completed job. URLs are public URLs of objects under `prefix` (the winning
/// attempt's `outputs/<tenant>/<job>/<epoch>/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobResult {
    /// The attempt whose outputs these are.
    pub epoch: u64,
    /// Object key prefix of every output.
    pub prefix: String,
    pub mode: Mode,
    pub source: SourceSummary,
    /// What was left out of the source and why.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The audio's loudness normalisation (`normalize_audio`): target, the source measured,
    /// the gain, the result measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loudness: Option<LoudnessReport>,
    /// Highest quality first; each with its measured `quality`.
    pub renditions: Vec<RenditionResult>,
    /// What the per-title probe chose for each rung and why (none under `quality: fixed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ladder: Option<crate::engine::LadderReport>,
    /// The HLS title's audio tracks (languages), the default first; `hls` is each one's
    /// playlist URL when they are renditions of their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audio_tracks: Vec<AudioTrackReport>,
    /// Caption tracks (the source's text subtitles) as WebVTT: `vtt` the whole track, `hls`
    /// its subtitle rendition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captions: Vec<CaptionReport>,
    pub hls_master: Option<String>,
    pub thumbnails: Option<ThumbnailUrls>,
    /// Every stored file (in the manifest; empty in the summary).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<StoredFile>,
    /// How many files were stored and their total size (both forms).
    #[serde(default)]
    pub file_count: usize,
    #[serde(default)]
    pub total_bytes: u64,
    /// URL of `manifest.json`, the list of every file (in the summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    pub engine: EngineUsage,
    pub cost: JobCost,
}

/// Name of the manifest object under a result's prefix.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The source as probed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceSummary {
    /// The video's duration (what the outputs last).
    pub duration_secs: f64,
    /// FFmpeg's demuxer name.
    #[serde(default)]
    pub container: String,
    /// Stored size of the pictures.
    pub width: u32,
    pub height: u32,
    /// What a viewer sees: pixel aspect ratio and display rotation applied.
    #[serde(default)]
    pub display_width: u32,
    #[serde(default)]
    pub display_height: u32,
    /// `num:den`, when the pixels are not square.
    #[serde(default)]
    pub sample_aspect_ratio: Option<String>,
    #[serde(default)]
    pub orientation: Orientation,
    #[serde(default)]
    pub interlaced: bool,
    #[serde(default)]
    pub fps: f64,
    pub video_codec: String,
    pub audio_codec: Option<String>,
    /// `sdr`, `pq` (HDR10) or `hlg`.
    #[serde(default)]
    pub dynamic_range: DynamicRange,
    /// The source's colour tags (primaries, transfer, matrix, range) as ffprobe names them.
    #[serde(default)]
    pub colour: ColourInfo,
}

/// One rendition: its displayed size, codecs, bit rate and the URLs of its files (the engine's
/// report of it, relocated from relative paths to URLs).
pub type RenditionResult = crate::engine::RenditionReport;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThumbnailUrls {
    pub poster: String,
    pub storyboard: String,
    pub storyboard_vtt: String,
    /// `thumbs/frames.json`: the index of the larger frames `GET /v1/jobs/{id}/thumbnail.jpg`
    /// answers from (absent on results from before they were made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<String>,
    /// `thumbs/preview.webp`: a few seconds as a looping animated WebP (`preview` output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredFile {
    pub key: String,
    pub url: String,
    pub bytes: u64,
    pub content_type: String,
}

/// How the engine ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EngineUsage {
    pub cpu_secs: f64,
    pub wall_secs: f64,
    /// When the engine started, in milliseconds since the epoch (fractional).
    pub started_at_ms: f64,
}

impl JobResult {
    /// The result of attempt `epoch` whose engine made `report`, with its outputs stored under
    /// `prefix`; `url_of` turns a key into its public URL.
    pub fn new(
        epoch: u64,
        prefix: &str,
        report: &EngineReport,
        engine: EngineUsage,
        cost: JobCost,
        url_of: &dyn Fn(&str) -> String,
    ) -> JobResult {
        let url = |relative: &str| url_of(&format!("{prefix}{relative}"));
        let (media, video) = (&report.media, &report.media.video);
        JobResult {
            epoch,
            prefix: prefix.to_owned(),
            mode: report.mode,
            source: SourceSummary {
                duration_secs: media.duration_secs,
                container: media.format.clone(),
                width: video.width,
                height: video.height,
                display_width: video.display_width,
                display_height: video.display_height,
                sample_aspect_ratio: video.sample_aspect_ratio.map(|[n, d]| format!("{n}:{d}")),
                orientation: video.orientation,
                interlaced: video.interlaced || report.deinterlaced,
                fps: video.fps,
                video_codec: video.codec.clone(),
                audio_codec: media.audio.as_ref().map(|a| a.codec.clone()),
                dynamic_range: video.colour.dynamic_range(),
                colour: video.colour.clone(),
            },
            warnings: media.warnings.clone(),
            loudness: report.loudness,
            renditions: report.renditions.iter().map(|r| r.relocated(url)).collect(),
            ladder: report.ladder.clone(),
            audio_tracks: report
                .audio_tracks
                .iter()
                .map(|t| AudioTrackReport { hls: t.hls.as_deref().map(url), ..t.clone() })
                .collect(),
            captions: report
                .captions
                .iter()
                .map(|c| CaptionReport {
                    vtt: url(&c.vtt),
                    hls: c.hls.as_deref().map(url),
                    ..c.clone()
                })
                .collect(),
            hls_master: report.hls_master.as_deref().map(url),
            thumbnails: report.thumbnails.as_ref().and_then(|t| match t.as_slice() {
                [poster, storyboard, vtt, rest @ ..] => Some(ThumbnailUrls {
                    poster: url(poster),
                    storyboard: url(storyboard),
                    storyboard_vtt: url(vtt),
                    frames: rest.iter().find(|f| f.ends_with(".json")).map(|f| url(f)),
                    preview: rest.iter().find(|f| f.ends_with(".webp")).map(|f| url(f)),
                }),
                _ => None,
            }),
            files: report
                .files
                .iter()
                .map(|f| StoredFile {
                    key: format!("{prefix}{}", f.path),
                    url: url(&f.path),
                    bytes: f.bytes,
                    content_type: f.content_type.clone(),
                })
                .collect(),
            file_count: report.files.len(),
            total_bytes: report.files.iter().map(|f| f.bytes).sum(),
            manifest: None,
            engine,
            cost,
        }
    }

    /// This result with every URL replaced by `url_of(key)` (e.g. signed playback URLs).
    pub fn with_urls(&self, url_of: &dyn Fn(&str) -> String) -> JobResult {
        let key_of = |url: &str| -> Option<String> {
            url.split_once(self.prefix.as_str()).map(|(_, rest)| format!("{}{rest}", self.prefix))
        };
        let map = |url: &str| key_of(url).map_or_else(|| url.to_owned(), |key| url_of(&key));
        let mut result = self.clone();
        result.hls_master = self.hls_master.as_deref().map(map);
        result.manifest = self.manifest.as_deref().map(map);
        result.renditions = self.renditions.iter().map(|r| r.relocated(map)).collect();
        for track in &mut result.audio_tracks {
            track.hls = track.hls.as_deref().map(map);
        }
        for caption in &mut result.captions {
            caption.vtt = map(&caption.vtt);
            caption.hls = caption.hls.as_deref().map(map);
        }
        if let Some(thumbs) = &mut result.thumbnails {
            thumbs.poster = map(&thumbs.poster);
            thumbs.storyboard = map(&thumbs.storyboard);
            thumbs.storyboard_vtt = map(&thumbs.storyboard_vtt);
            thumbs.frames = thumbs.frames.as_deref().map(map);
            thumbs.preview = thumbs.preview.as_deref().map(map);
        }
        for file in &mut result.files {
            file.url = url_of(&file.key);
        }
        result
    }

    /// The summary of this manifest: no file list, the manifest's URL instead.
    pub fn summary(&self, manifest_url: String) -> JobResult {
        JobResult { files: Vec::new(), manifest: Some(manifest_url), ..self.clone() }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cost::{Prices, Usage};

    /// A result as the worker makes it: one 360p HLS rendition with thumbnails.
    pub(crate) fn sample() -> JobResult {
        let report: EngineReport = serde_json::from_value(serde_json::json!({
            "media": {
                "format": "mov,mp4,m4a,3gp,3g2,mj2", "duration_secs": 2.0, "bit_rate": null,
                "streams": 2, "warnings": ["audio track 2 was left out"],
                "video": { "index": 0, "codec": "h264", "width": 640, "height": 360,
                           "display_width": 360, "display_height": 640,
                           "orientation": "clockwise", "fps": 25.0, "bit_rate": null,
                           "pixel_format": "yuv420p" },
                "audio": { "index": 1, "codec": "aac", "sample_rate": 48000, "channels": 2,
                           "bit_rate": null },
            },
            "mode": "transcode",
            "renditions": [{ "name": "360p", "width": 360, "height": 640, "video_codec": "h264",
                             "audio_codec": "aac", "video_bit_rate": 400000, "mp4": null,
                             "hls": "hls/360p/index.m3u8" }],
            "hls_master": "hls/master.m3u8",
            "thumbnails": ["thumbs/poster.jpg", "thumbs/storyboard.jpg", "thumbs/storyboard.vtt"],
            "files": [{ "path": "hls/master.m3u8", "bytes": 120,
                        "content_type": "application/vnd.apple.mpegurl" }],
            "frames": 50, "decode_errors": 0,
        }))
        .unwrap();
        JobResult::new(
            2,
            "outputs/acme/job_1/2/",
            &report,
            EngineUsage { cpu_secs: 1.5, wall_secs: 1.0, started_at_ms: 1.0 },
            JobCost::new(Usage { cpu_secs: 1.5, ..Usage::default() }, &Prices::default()),
            &|key| format!("https://cdn.example/{key}"),
        )
    }

    #[test]
    fn urls_point_under_the_winning_attempt_and_the_result_round_trips() {
        let result = sample();
        assert_eq!(
            result.hls_master.as_deref(),
            Some("https://cdn.example/outputs/acme/job_1/2/hls/master.m3u8")
        );
        assert_eq!(
            result.renditions[0].hls.as_deref(),
            Some("https://cdn.example/outputs/acme/job_1/2/hls/360p/index.m3u8")
        );
        let thumbs = result.thumbnails.as_ref().unwrap();
        assert_eq!(thumbs.poster, "https://cdn.example/outputs/acme/job_1/2/thumbs/poster.jpg");
        assert_eq!(result.files[0].key, "outputs/acme/job_1/2/hls/master.m3u8");
        assert_eq!((result.source.display_width, result.source.display_height), (360, 640));
        assert_eq!(result.warnings, ["audio track 2 was left out"]);
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["source"]["orientation"], "clockwise");
        assert_eq!(serde_json::from_value::<JobResult>(json).unwrap(), result);
    }
}
