//! What the worker hands the engine child and what it gets back: plain data, serialized over
//! the child's stdin/stdout (see [`protocol`](super::protocol)).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::plan::EngineSpec;
use super::quality::{LadderReport, QualityReport};
use super::{DynamicRange, Limits, MediaInfo, Mode};
use crate::jobs::{AudioCodec, VideoCodec};

/// Encoder settings from the worker's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderSettings {
    /// x264/x265 speed preset (`ultrafast` … `veryslow`).
    pub x264_preset: String,
    /// HLS segment duration in seconds.
    pub segment_secs: f64,
    /// Encoder threads per rendition (0 = automatic).
    pub threads: usize,
}

impl Default for EncoderSettings {
    fn default() -> EncoderSettings {
        EncoderSettings { x264_preset: "fast".to_owned(), segment_secs: 4.0, threads: 0 }
    }
}

/// Everything the engine child needs for one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineJob {
    /// The source, a local file in the job directory (never a URL).
    pub input: PathBuf,
    /// Where outputs are written (`mp4/`, `hls/`, `thumbs/`).
    pub output_dir: PathBuf,
    pub spec: EngineSpec,
    pub limits: Limits,
    pub settings: EncoderSettings,
    /// What to do with the source.
    #[serde(default)]
    pub task: Task,
    /// The caption files the job names, one per entry of `spec.captions` in its order, as
    /// the worker fetched them (read by the whole title's run and a split title's stitch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<SidecarFile>,
    /// The title's per-title decision, made before (by the probe task of a split title, whose
    /// chunks and stitch all use it): the engine applies it rather than probing again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ladder: Option<LadderReport>,
}

/// One caption file of the job, as the worker fetched it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SidecarFile {
    /// A local file in the job directory.
    Fetched(PathBuf),
    /// Not fetched (gone from the bucket, over the cap): left out with this warning.
    Unavailable(String),
}

/// What one engine run does: the whole title, or one task of a split title's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Transcode the whole title: every output of the job.
    #[default]
    Whole,
    /// No encoding: probe and plan, and report the source and the renditions planned (no
    /// files). How the worker learns, without parsing media itself, whether a title is split.
    Probe,
    /// The video of one chunk of a split title (see [`Chunk`]).
    Chunk(Chunk),
    /// The audio of a range of the title (the whole title by default), into HLS audio
    /// renditions (`hls/audio/`, …).
    Audio(Chunk),
    /// Join the committed parts' outputs into the title's (see [`StitchParts`]).
    Stitch(StitchParts),
}

impl Task {
    /// The chunk, for a chunk's task.
    pub fn chunk(&self) -> Option<&Chunk> {
        match self {
            Task::Chunk(chunk) => Some(chunk),
            _ => None,
        }
    }

    /// Whether this run makes only one part of a split title's outputs.
    pub fn is_part(&self) -> bool {
        matches!(self, Task::Chunk(_) | Task::Audio(_))
    }

    /// The audio range, for an audio task.
    pub fn audio(&self) -> Option<&Chunk> {
        match self {
            Task::Audio(range) => Some(range),
            _ => None,
        }
    }
}

/// What a split title is cut into: chunks of its video encoded apart (possibly on different
/// machines), and its audio in ranges of its own (or whole). An audio range's encoder starts
/// a little before the range and keeps only the packets inside it, so the ranges' packets
/// join into the stream one encoder would have made: no priming or padding at a range's edge.
/// Stored on the job's parts as this JSON (`{"kind": "video", …}`; `{"kind": "audio"}` alone
/// is the whole title's audio).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Part {
    Video(Chunk),
    /// The audio of a range of the title, into HLS audio renditions (`hls/audio/`, …).
    Audio(Chunk),
}

impl Part {
    /// The chunk, for a video part.
    pub fn chunk(&self) -> Option<&Chunk> {
        match self {
            Part::Video(chunk) => Some(chunk),
            Part::Audio(_) => None,
        }
    }

    /// The range of the title it covers.
    pub fn range(&self) -> &Chunk {
        match self {
            Part::Video(range) | Part::Audio(range) => range,
        }
    }
}

impl From<Part> for Task {
    fn from(part: Part) -> Task {
        match part {
            Part::Video(chunk) => Task::Chunk(chunk),
            Part::Audio(range) => Task::Audio(range),
        }
    }
}

/// Where the outputs of a split title's parts are, for the stitch: chunk `k`'s under
/// `dir/<k>/`, audio range `j`'s under `dir/audio/<j>/` (each as that item's engine run wrote
/// its output folder). The stitch writes the title's HLS set, MP4s and thumbnails as the
/// whole encode would, without re-encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StitchParts {
    pub dir: PathBuf,
    pub chunks: u32,
    /// How many audio ranges (0: a silent title).
    pub audio: u32,
}

impl StitchParts {
    /// The output folder of chunk `k`.
    pub fn chunk_dir(&self, k: u32) -> PathBuf {
        self.dir.join(k.to_string())
    }

    /// The output folder of audio range `j`.
    pub fn audio_dir(&self, j: u32) -> PathBuf {
        self.dir.join("audio").join(j.to_string())
    }
}

/// One part of a split job: the video of `[start_secs, end_secs)` of the title (seconds from
/// its first frame), encoded into HLS segments numbered from `first_segment` with timestamps
/// on the whole title's timeline, so the parts' playlists join into one without re-encoding.
/// `start_secs` is a segment boundary: keyframes are forced there in the whole-title encode
/// too, so a part starts with the keyframe the whole encode would have. No audio, MP4 or
/// thumbnails: those are made once for the title.
/// The default is the whole title.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Chunk {
    pub start_secs: f64,
    /// `None`: to the end of the source.
    pub end_secs: Option<f64>,
    pub first_segment: u32,
    /// The title's per-title decision, stored with each video chunk so every machine that
    /// encodes one uses the same settings (chunks of one title stay equivalent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ladder: Option<LadderReport>,
}

impl Chunk {
    /// From the title's start to its end.
    pub fn is_whole(&self) -> bool {
        self.start_secs <= 0.0 && self.end_secs.is_none()
    }
}

/// Progress of a running transcode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    pub frames: u64,
    pub percent: f64,
    /// Decoded frames per second of wall time.
    pub fps: f64,
    /// Media seconds per wall second (× realtime).
    pub speed: f64,
    pub eta_secs: Option<f64>,
    /// A split title: its parts committed so far, and how many it has (`percent` is then
    /// their share of the title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<PartsProgress>,
}

/// How far the parts of a split title are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartsProgress {
    pub done: u32,
    pub total: u32,
}

/// One written file, relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    pub path: String,
    pub bytes: u64,
    pub content_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RenditionReport {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub video_codec: VideoCodec,
    pub audio_codec: Option<AudioCodec>,
    /// Bits/s the video never averages more than (constant quality under this cap,
    /// docs/MEDIA.md); in copy mode, the source's rate. What was spent is in the master
    /// playlist's `BANDWIDTH`/`AVERAGE-BANDWIDTH` and the files' sizes.
    pub video_bit_rate: u64,
    /// Where the MP4 is, when written: a path relative to the output folder in the engine's
    /// report, its URL in a job's result (see `relocated`).
    pub mp4: Option<String>,
    /// Where the HLS playlist is, when written (as `mp4`).
    pub hls: Option<String>,
    /// `sdr`, or `pq`/`hlg` when the source's HDR was kept (`hdr: keep`, or copied).
    #[serde(default)]
    pub dynamic_range: DynamicRange,
    /// The picture quality measured (docs/MEDIA.md, "Quality"); none for a copy, for
    /// renditions that keep HDR, or when the measurement failed (a warning says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityReport>,
}

impl RenditionReport {
    /// This rendition with its files' locations turned by `locate` (relative paths into URLs,
    /// or URLs into signed ones).
    pub fn relocated(&self, locate: impl Fn(&str) -> String) -> RenditionReport {
        RenditionReport {
            mp4: self.mp4.as_deref().map(&locate),
            hls: self.hls.as_deref().map(&locate),
            ..self.clone()
        }
    }
}

/// One audio track of the outputs (HLS keeps every usable track of the source; MP4s carry
/// the first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AudioTrackReport {
    /// What players list it as.
    pub name: String,
    /// BCP 47 language subtag (`en`, `fr`), when the source says.
    pub language: Option<String>,
    /// The one players start with (and the MP4s carry).
    pub default: bool,
    /// Its own HLS playlist when the title's audio renditions are apart from the video
    /// (several tracks, or a split title): a path in the engine's report, a URL in a result.
    pub hls: Option<String>,
}

/// One caption track (a text subtitle track of the source) as WebVTT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaptionReport {
    pub name: String,
    /// BCP 47 language subtag, when the source says.
    pub language: Option<String>,
    /// Shown without the viewer asking.
    pub default: bool,
    /// Shown even to viewers who turned captions off (foreign-language lines).
    pub forced: bool,
    /// The whole track as one WebVTT file (for an MP4 player's `<track>`): a path in the
    /// engine's report, a URL in a result.
    pub vtt: String,
    /// Its HLS subtitle rendition's playlist, when HLS is written.
    pub hls: Option<String>,
}

/// A loudness measurement (EBU R128).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoudnessMeasure {
    /// Integrated loudness, LUFS (-70 for silence).
    pub integrated_lufs: f64,
    /// Loudness range, LU.
    pub range_lu: f64,
    /// True peak, dBTP.
    pub true_peak_dbtp: f64,
}

/// What loudness normalisation did: the source measured, the gain applied, the result
/// measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoudnessReport {
    /// The integrated loudness asked for, LUFS.
    pub target_lufs: f64,
    pub before: LoudnessMeasure,
    /// The linear gain applied, dB: `target - before`, less where the true peak would pass
    /// -1 dBTP.
    pub gain_db: f64,
    pub after: LoudnessMeasure,
}

/// What the engine made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineReport {
    pub media: MediaInfo,
    pub mode: Mode,
    pub renditions: Vec<RenditionReport>,
    /// `hls/master.m3u8` when HLS was written.
    pub hls_master: Option<String>,
    /// `thumbs/poster.jpg`, `thumbs/storyboard.jpg`, `thumbs/storyboard.vtt`,
    /// `thumbs/frames.json` (and `thumbs/preview.webp`) when written.
    pub thumbnails: Option<Vec<String>>,
    pub files: Vec<OutputFile>,
    pub frames: u64,
    pub decode_errors: u64,
    /// Seconds spent opening and probing the source (the rest of the run is encoding).
    #[serde(default)]
    pub probe_secs: f64,
    /// The source was interlaced and deinterlaced.
    #[serde(default)]
    pub deinterlaced: bool,
    /// The audio's loudness normalisation, when asked and the source has audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loudness: Option<LoudnessReport>,
    /// The audio tracks of an HLS title, the default first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audio_tracks: Vec<AudioTrackReport>,
    /// The caption tracks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captions: Vec<CaptionReport>,
    /// What the per-title probe chose for each rung, and why (none under `quality: fixed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ladder: Option<LadderReport>,
}
