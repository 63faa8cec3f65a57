//! The plan: preset + qualities + outputs + the probed source → the renditions to make. Pure
//! and deterministic, so it is unit-tested without FFmpeg.
//!
//! Rules: plan on the *displayed* size (pixel aspect ratio and display rotation applied) and
//! output square pixels with even dimensions; a quality names the *short* side (so portrait
//! video works); never upscale: `auto` takes the rungs at or below the source plus a top rung
//! at the source's own size when it lies between rungs, an explicit rung above the source is
//! made at source size and named by its real height; a source within [`NEAR_LINES`] of a rung
//! gets that rung (a 359-line source asked for 360p gives `360p`, 358 lines high); cap bit
//! rates relative to the source; no audio rendition for a silent source.

use serde::{Deserialize, Serialize};

use super::media::{AudioTrack, DynamicRange, MediaInfo, TrackLanguage, TrackName};
use super::quality::{LadderReport, QualityFloor, QualityGoal};
use crate::jobs::{AudioCodec, HdrMode, OutputKind, Preset, Qualities, Quality, VideoCodec};

/// The seed ladder: (quality, nominal 16:9 width, height, video bits/s ceiling, audio bits/s).
const LADDER: [(Quality, u32, u32, u64, u64); 4] = [
    (Quality::P144, 256, 144, 100_000, 64_000),
    (Quality::P360, 640, 360, 400_000, 96_000),
    (Quality::P720, 1280, 720, 1_500_000, 128_000),
    (Quality::P1080, 1920, 1080, 3_500_000, 160_000),
];

/// Renditions never get more than this multiple of the source's video bit rate (a codec change
/// may need a little more than the source had, never a lot more).
const SOURCE_BITRATE_CAP: f64 = 1.5;
/// A source this many lines short of a rung still gets that rung (at its own size).
const NEAR_LINES: u32 = 8;
/// Keyframe interval of MP4-only outputs.
const MP4_GOP_SECS: f64 = 2.0;

/// What the engine is asked to do (the job spec's engine-relevant part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSpec {
    pub preset: Preset,
    pub qualities: Qualities,
    pub outputs: Vec<OutputKind>,
    pub video_codec: VideoCodec,
    pub audio_codec: AudioCodec,
    #[serde(default)]
    pub hdr: HdrMode,
    /// Integrated loudness (LUFS) to normalise the audio to, when asked.
    #[serde(default)]
    pub loudness_target: Option<i8>,
    /// The caption files the job names (the engine gets the files themselves as
    /// [`EngineJob::sidecars`](super::EngineJob::sidecars), in the same order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captions: Vec<CaptionLabel>,
    /// Also carry the caption tracks in the MP4s as MP4 timed text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mp4_captions: bool,
    /// How the rungs' quality settings are chosen (per title unless `fixed`).
    #[serde(default)]
    pub quality: QualityGoal,
    /// The lowest measured quality a rendition may have (the job's, else the worker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_floor: Option<QualityFloor>,
}

/// How a caption file the job names is listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptionLabel {
    pub language: TrackLanguage,
    pub name: TrackName,
    pub default: bool,
    pub forced: bool,
}

impl EngineSpec {
    /// H.264 and AAC, the default for everything else: what a job asks when it names only its
    /// preset, qualities and outputs.
    pub fn new(preset: Preset, qualities: Qualities, outputs: &[OutputKind]) -> EngineSpec {
        EngineSpec {
            preset,
            qualities,
            outputs: outputs.to_vec(),
            video_codec: VideoCodec::H264,
            audio_codec: AudioCodec::Aac,
            hdr: HdrMode::default(),
            loudness_target: None,
            captions: Vec::new(),
            mp4_captions: false,
            quality: QualityGoal::default(),
            quality_floor: None,
        }
    }
}

impl From<&crate::jobs::JobSpec> for EngineSpec {
    fn from(spec: &crate::jobs::JobSpec) -> EngineSpec {
        EngineSpec {
            preset: spec.preset,
            qualities: spec.qualities.clone(),
            outputs: spec.outputs.clone(),
            video_codec: spec.video_codec,
            audio_codec: spec.audio_codec,
            hdr: spec.hdr,
            loudness_target: spec.loudness_target,
            captions: spec
                .captions
                .iter()
                .map(|c| CaptionLabel {
                    language: c.language.clone(),
                    name: c.name.clone(),
                    default: c.default,
                    forced: c.forced,
                })
                .collect(),
            mp4_captions: spec.mp4_captions,
            quality: spec.quality,
            quality_floor: spec.quality_floor,
        }
    }
}

/// Remux the source as is, or decode and encode renditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Copy,
    Transcode,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioPlan {
    pub codec: AudioCodec,
    pub bit_rate: u64,
    pub sample_rate: u32,
    pub channels: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenditionPlan {
    /// `360p`, `720p`, … (or `source` in copy mode); also the file and folder name.
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub video_codec: VideoCodec,
    /// The ceiling of the video's bit rate (the encoder's VBV rate, over a two-second buffer):
    /// the encoder aims at [`RenditionPlan::crf`]'s constant quality and spends less where
    /// the picture is easy. In copy mode, the source's rate.
    pub video_bit_rate: u64,
    /// Constant rate factor (x264/x265/SVT-AV1/libvpx scale, by codec). Capped constant
    /// quality rather than an average bit rate because one-pass ABR carries its rate control
    /// across the whole title: a title encoded in chunks by several workers would spend its
    /// bits chunk by chunk and lose up to 0.4 dB on the small rungs (docs/BENCHMARKS.md),
    /// while constant quality decides each frame from the frames around it alone.
    pub crf: u8,
    pub fps: f64,
    /// Keyframe interval in frames.
    pub gop: u32,
    pub audio: Option<AudioPlan>,
    /// SDR (8-bit BT.709 or the source's SDR colours), or the source's HDR kept (10-bit).
    #[serde(default)]
    pub dynamic_range: DynamicRange,
}

impl RenditionPlan {
    /// The encoder's VBV buffer, in bits: two seconds of the cap, so a hard second may spend
    /// more than the cap when an easy one before it spent less.
    pub fn vbv_buffer_bits(&self) -> u64 {
        self.video_bit_rate * 2
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThumbnailPlan {
    /// Where the poster frame is taken from.
    pub poster_at_secs: f64,
    pub poster_width: u32,
    pub poster_height: u32,
    /// One storyboard tile every this many seconds.
    pub interval_secs: f64,
    pub tile_width: u32,
    pub tile_height: u32,
    pub columns: u32,
    pub tiles: u32,
    /// Each tile's picture is also kept at this size, as `thumbs/frames/<i>.jpg`: what
    /// `GET /v1/jobs/{id}/thumbnail.jpg` answers from, at any time and width up to it.
    pub frame_width: u32,
    pub frame_height: u32,
    /// The animated preview, when asked for (`preview` output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewPlan>,
}

/// An animated preview: `frames` pictures `1 / fps` apart from `start_secs`, looping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewPlan {
    pub start_secs: f64,
    pub frames: u32,
    pub fps: u32,
    pub width: u32,
    pub height: u32,
}

impl PreviewPlan {
    /// When picture `n` is due.
    pub fn time_of(&self, n: u32) -> f64 {
        self.start_secs + f64::from(n) / f64::from(self.fps.max(1))
    }
}

/// `thumbs/frames.json`: how to find the thumbnail frame of any time of the title — frame `i`
/// (`thumbs/frames/<i>.jpg`, `width`×`height`) shows time `i * interval_secs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThumbnailFrames {
    pub interval_secs: f64,
    pub count: u32,
    pub width: u32,
    pub height: u32,
    pub duration_secs: f64,
}

impl ThumbnailFrames {
    /// The frame nearest to `time_secs` (clamped to the title).
    pub fn nearest(&self, time_secs: f64) -> u32 {
        let last = self.count.saturating_sub(1);
        if !time_secs.is_finite() || time_secs <= 0.0 || self.interval_secs <= 0.0 {
            return 0;
        }
        ((time_secs / self.interval_secs).round() as u32).min(last)
    }
}

/// One HLS audio rendition: a source audio track, encoded once for every variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioRenditionPlan {
    /// The source stream.
    pub index: usize,
    /// Its folder under `hls/`: `audio` for the first, `audio-1`, `audio-2`, … after.
    pub dir: String,
    pub language: Option<TrackLanguage>,
    /// What players list it as: the track's title, else its language's name, else `Audio N`;
    /// unique in the title.
    pub name: TrackName,
    /// The one players start with (the source's default track).
    pub default: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnginePlan {
    pub mode: Mode,
    pub renditions: Vec<RenditionPlan>,
    pub mp4: bool,
    /// HLS segment duration when HLS is written.
    pub hls_segment_secs: Option<f64>,
    pub thumbnails: Option<ThumbnailPlan>,
    /// The HLS audio renditions: every usable audio track of the source, the default first.
    /// With one track, a whole-title encode muxes it into each variant instead (a split title
    /// always has them apart).
    #[serde(default)]
    pub audio_renditions: Vec<AudioRenditionPlan>,
    /// The text subtitle tracks, as WebVTT captions (a file each, and HLS subtitle
    /// renditions when HLS is written).
    #[serde(default)]
    pub captions: Vec<CaptionPlan>,
}

/// One caption track: a text subtitle track of the source, or a caption file the job names,
/// as WebVTT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionPlan {
    /// The source stream (when `sidecar` is `None`).
    pub index: usize,
    /// The job's caption file it is (its place in the spec's `captions`), if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<usize>,
    /// Its name in files: `captions/<slug>.vtt`, `hls/<slug>/` (`subtitles-0`, … for the
    /// source's tracks, `captions-0`, … for the job's files).
    pub slug: String,
    pub language: Option<TrackLanguage>,
    pub name: TrackName,
    /// Shown without the viewer asking (the source flags it default).
    pub default: bool,
    /// Forced: shown even to viewers who turned captions off.
    pub forced: bool,
}

impl EnginePlan {
    /// How far apart the encoders force keyframes: the HLS segment, else the MP4 GOP.
    pub fn keyframe_secs(&self) -> f64 {
        self.hls_segment_secs.unwrap_or(MP4_GOP_SECS)
    }
}

/// Plans the renditions. `segment_secs` is the HLS segment duration, `max_output_fps` the
/// highest frame rate an output gets.
pub fn plan(
    spec: &EngineSpec,
    media: &MediaInfo,
    segment_secs: f64,
    max_output_fps: f64,
) -> EnginePlan {
    let hls = spec.outputs.contains(&OutputKind::Hls);
    let mp4 = spec.outputs.contains(&OutputKind::Mp4);
    let hls_segment_secs = hls.then_some(segment_secs);
    let thumbnails = spec.outputs.contains(&OutputKind::Thumbnails).then(|| ThumbnailPlan {
        preview: spec.outputs.contains(&OutputKind::Preview).then(|| preview_plan(media)),
        ..thumbnail_plan(media)
    });
    let (display_w, display_h) = display(media);
    let source_short = display_w.min(display_h);
    let copied = copied_codecs(media);
    let rungs: Vec<(String, u32)> = match (&spec.qualities, spec.preset) {
        // A copy cannot normalise loudness: a job that asks for it is transcoded.
        (Qualities::List(list), Preset::Default)
            if list.is_empty() && !hls && copied.is_some() && spec.loudness_target.is_none() =>
        {
            let (video_codec, audio_codec) = copied.expect("checked by the guard");
            // What the copy really is: the source's codecs, displayed size and bit rates.
            let rendition = RenditionPlan {
                name: "source".to_owned(),
                width: display_w,
                height: display_h,
                video_codec,
                video_bit_rate: media.video.bit_rate.or(media.bit_rate).unwrap_or(0),
                crf: 0,
                fps: media.video.fps,
                gop: 0,
                audio: media.audio.as_ref().zip(audio_codec).map(|(source, codec)| AudioPlan {
                    codec,
                    bit_rate: source.bit_rate.unwrap_or(0),
                    sample_rate: source.sample_rate,
                    channels: source.channels,
                }),
                dynamic_range: media.video.colour.dynamic_range(),
            };
            return EnginePlan {
                mode: Mode::Copy,
                renditions: vec![rendition],
                mp4: true,
                hls_segment_secs,
                thumbnails,
                audio_renditions: Vec::new(),
                captions: captions(spec, media),
            };
        }
        // Not copyable: one rendition at source size.
        (Qualities::List(list), _) if list.is_empty() => vec![source_rung(source_short)],
        (Qualities::List(list), _) => {
            let mut sorted = list.clone();
            sorted.sort();
            sorted.into_iter().map(|q| clamp_rung(q, source_short)).collect()
        }
        (Qualities::Auto(_), _) => {
            let mut fitting: Vec<(String, u32)> = LADDER
                .iter()
                .filter(|(q, ..)| q.height() <= source_short + NEAR_LINES)
                .map(|(q, ..)| clamp_rung(*q, source_short))
                .collect();
            // A source between two rungs also gets a rung at its own size: a 540p source is
            // not cut down to 360p.
            let top = fitting.last().map_or(0, |(_, short)| *short);
            let largest = LADDER[LADDER.len() - 1].0.height();
            if even(source_short) > top + NEAR_LINES && top < largest {
                fitting.push(source_rung(source_short.min(largest)));
            }
            fitting
        }
    };
    let mut renditions: Vec<RenditionPlan> = Vec::new();
    for (name, short_side) in rungs {
        let rendition = rendition(
            spec,
            media,
            &name,
            short_side,
            hls_segment_secs.unwrap_or(MP4_GOP_SECS),
            max_output_fps,
        );
        if !renditions.iter().any(|r| r.width == rendition.width && r.height == rendition.height) {
            renditions.push(rendition);
        }
    }
    // Highest quality first: players and the master playlist list the best rendition first.
    renditions.sort_by_key(|r| std::cmp::Reverse(r.width * r.height));
    let audio_renditions = if hls { audio_renditions(media) } else { Vec::new() };
    EnginePlan {
        mode: Mode::Transcode,
        renditions,
        mp4,
        hls_segment_secs,
        thumbnails,
        audio_renditions,
        captions: captions(spec, media),
    }
}

/// The plan with a per-title decision applied: each rung at its chosen setting, the dropped
/// ones left out (a rung the decision does not name keeps its fixed setting).
pub fn apply_ladder(plan: &mut EnginePlan, ladder: &LadderReport) {
    if plan.mode != Mode::Transcode {
        return;
    }
    plan.renditions.retain(|r| ladder.rung(&r.name).is_none_or(|choice| choice.kept));
    for rendition in &mut plan.renditions {
        if let Some(choice) = ladder.rung(&rendition.name) {
            rendition.crf = choice.crf;
        }
    }
}

/// Names for players' menus of tracks labelled (title, language): the title, else the
/// language's name, else `<fallback> N`; unique (a second "English" becomes "English (2)").
fn menu_names(
    labels: &[(Option<&TrackName>, Option<&TrackLanguage>)],
    fallback: &str,
) -> Vec<TrackName> {
    let mut names: Vec<TrackName> = Vec::with_capacity(labels.len());
    for (n, (title, language)) in labels.iter().enumerate() {
        let base = title
            .cloned()
            .or_else(|| {
                let language = language.as_ref()?;
                TrackName::clean(language.english_name().unwrap_or(language.as_str()))
            })
            .unwrap_or_else(|| TrackName::clean(&format!("{fallback} {}", n + 1)).expect("clean"));
        let mut name = base.clone();
        let mut copy = 2;
        while names.contains(&name) {
            let suffix = format!(" ({copy})");
            let stem: String =
                base.as_str().chars().take(TrackName::MAX_CHARS - suffix.len()).collect();
            name = TrackName::clean(&format!("{stem}{suffix}")).expect("clean");
            copy += 1;
        }
        names.push(name);
    }
    names
}

/// The source's text subtitle tracks, then the job's caption files, as captions. A file the
/// job marks default is the one default (a playlist has at most one per group).
fn captions(spec: &EngineSpec, media: &MediaInfo) -> Vec<CaptionPlan> {
    let streams = &media.subtitle_tracks;
    let labels: Vec<_> = streams
        .iter()
        .map(|t| (t.title.as_ref(), t.language.as_ref()))
        .chain(spec.captions.iter().map(|c| (Some(&c.name), Some(&c.language))))
        .collect();
    let mut names = menu_names(&labels, "Subtitles").into_iter();
    let job_default = spec.captions.iter().any(|c| c.default);
    let mut plans: Vec<CaptionPlan> = streams
        .iter()
        .zip(names.by_ref())
        .enumerate()
        .map(|(n, (track, name))| CaptionPlan {
            index: track.index,
            sidecar: None,
            slug: format!("subtitles-{n}"),
            language: track.language.clone(),
            name,
            default: track.default && !job_default,
            forced: track.forced,
        })
        .collect();
    plans.extend(spec.captions.iter().zip(names).enumerate().map(|(n, (caption, name))| {
        CaptionPlan {
            index: 0,
            sidecar: Some(n),
            slug: format!("captions-{n}"),
            language: Some(caption.language.clone()),
            name,
            default: caption.default,
            forced: caption.forced,
        }
    }));
    plans
}

/// The source's usable audio tracks as HLS audio renditions, named for players' menus.
fn audio_renditions(media: &MediaInfo) -> Vec<AudioRenditionPlan> {
    let tracks = match (&media.audio_tracks[..], &media.audio) {
        // A report from before tracks were listed: its one track.
        ([], Some(audio)) => {
            vec![AudioTrack { index: audio.index, language: None, title: None, default: true }]
        }
        (tracks, _) => tracks.to_vec(),
    };
    let labels: Vec<_> = tracks.iter().map(|t| (t.title.as_ref(), t.language.as_ref())).collect();
    let names = menu_names(&labels, "Audio");
    tracks
        .iter()
        .zip(names)
        .enumerate()
        .map(|(n, (track, name))| AudioRenditionPlan {
            index: track.index,
            dir: if n == 0 { "audio".to_owned() } else { format!("audio-{n}") },
            language: track.language.clone(),
            name,
            default: n == 0,
        })
        .collect()
}

/// A rung above the source is made at the source's size instead (never upscale), named by
/// its real height — unless the source is within [`NEAR_LINES`] of it.
fn clamp_rung(quality: Quality, source_short: u32) -> (String, u32) {
    if quality.height() <= source_short {
        (quality.as_str().to_owned(), quality.height())
    } else if quality.height() <= source_short + NEAR_LINES {
        (quality.as_str().to_owned(), even(source_short))
    } else {
        source_rung(source_short)
    }
}

/// A rung at the source's own size, named by its (even) height.
fn source_rung(source_short: u32) -> (String, u32) {
    let short = even(source_short);
    (format!("{short}p"), short)
}

/// The displayed size, falling back to the stored size for reports of older engines.
fn display(media: &MediaInfo) -> (u32, u32) {
    if media.video.display_width > 0 && media.video.display_height > 0 {
        (media.video.display_width, media.video.display_height)
    } else {
        (media.video.width, media.video.height)
    }
}

/// The codecs a stream copy would deliver, when an MP4 can carry them as they are and the
/// job record can name them; `None` means the `default` preset transcodes.
fn copied_codecs(media: &MediaInfo) -> Option<(VideoCodec, Option<AudioCodec>)> {
    let video = match media.video.codec.as_str() {
        "h264" => VideoCodec::H264,
        "hevc" => VideoCodec::Hevc,
        "av1" => VideoCodec::Av1,
        "vp9" => VideoCodec::Vp9,
        _ => return None,
    };
    let audio = match media.audio.as_ref().map(|a| a.codec.as_str()) {
        None => None,
        Some("aac") => Some(AudioCodec::Aac),
        Some("opus") => Some(AudioCodec::Opus),
        Some(_) => return None,
    };
    Some((video, audio))
}

fn rendition(
    spec: &EngineSpec,
    media: &MediaInfo,
    name: &str,
    short_side: u32,
    gop_secs: f64,
    max_output_fps: f64,
) -> RenditionPlan {
    let (src_w, src_h) = display(media);
    let (src_w, src_h) = (f64::from(src_w), f64::from(src_h));
    let short = even(short_side);
    let (width, height) = if src_w >= src_h {
        (even_round(f64::from(short) * src_w / src_h), short)
    } else {
        (short, even_round(f64::from(short) * src_h / src_w))
    };
    // The rung whose short side is nearest at or above this one sets the bit rates.
    let (_, nominal_w, nominal_h, video, audio) =
        *LADDER.iter().find(|(_, _, h, ..)| *h >= short_side).unwrap_or(&LADDER[LADDER.len() - 1]);
    let pixel_ratio = f64::from(width * height) / f64::from(nominal_w * nominal_h);
    let mut video_bit_rate = (video as f64 * pixel_ratio).round() as u64;
    if let Some(source) = media.video.bit_rate.or(media.bit_rate) {
        let cap = (source as f64 * SOURCE_BITRATE_CAP).round() as u64;
        video_bit_rate = video_bit_rate.min(cap.max(50_000));
    }
    let fps = media.video.fps.clamp(1.0, max_output_fps.max(1.0));
    let audio = media.audio.as_ref().map(|source| AudioPlan {
        codec: spec.audio_codec,
        bit_rate: audio,
        sample_rate: 48_000,
        channels: source.channels.clamp(1, 2),
    });
    // HDR is kept only when asked and the codec carries it (10-bit HEVC or AV1).
    let keeps_hdr =
        spec.hdr == HdrMode::Keep && matches!(spec.video_codec, VideoCodec::Hevc | VideoCodec::Av1);
    RenditionPlan {
        name: name.to_owned(),
        width,
        height,
        video_codec: spec.video_codec,
        video_bit_rate,
        crf: constant_rate_factor(spec.video_codec),
        fps,
        gop: ((fps * gop_secs).round() as u32).max(1),
        audio,
        dynamic_range: match keeps_hdr {
            true => media.video.colour.dynamic_range(),
            false => DynamicRange::Sdr,
        },
    }
}

/// Each encoder's own default quality (libvpx has none: 31 is its documented VOD starting
/// point), about the same picture at each codec's cost: every rung's setting under
/// `quality: fixed`, and the per-title probe's first trial.
pub fn constant_rate_factor(codec: VideoCodec) -> u8 {
    match codec {
        VideoCodec::H264 => 23,
        VideoCodec::Hevc => 28,
        VideoCodec::Av1 => 35,
        VideoCodec::Vp9 => 31,
    }
}

fn thumbnail_plan(media: &MediaInfo) -> ThumbnailPlan {
    let duration = media.duration_secs.max(0.0);
    let interval = (duration / 100.0).max(1.0);
    let tiles = ((duration / interval).ceil() as u32).clamp(1, 100);
    let (width, height) = display(media);
    let aspect = f64::from(height) / f64::from(width.max(1));
    let poster_width = width.min(1280);
    let frame_width = width.min(FRAME_WIDTH);
    ThumbnailPlan {
        poster_at_secs: (duration * 0.1).min(5.0),
        poster_width: even(poster_width),
        poster_height: even_round(f64::from(poster_width) * aspect),
        interval_secs: interval,
        tile_width: 160,
        tile_height: even_round(160.0 * aspect),
        columns: tiles.min(10),
        tiles,
        frame_width: even(frame_width),
        frame_height: even_round(f64::from(frame_width) * aspect),
        preview: None,
    }
}

/// Seconds of animated preview, its rate and widest size.
const PREVIEW_SECS: f64 = 3.0;
const PREVIEW_FPS: u32 = 10;
const PREVIEW_WIDTH: u32 = 320;

/// A few seconds from where the poster is taken (10 % in, at most 5 s), or from the start
/// when less is left; the whole title when it is shorter.
fn preview_plan(media: &MediaInfo) -> PreviewPlan {
    let duration = media.duration_secs.max(0.0);
    let poster = (duration * 0.1).min(5.0);
    let start = if duration - poster >= PREVIEW_SECS { poster } else { 0.0 };
    let length = PREVIEW_SECS.min(duration - start).max(0.0);
    let (width, height) = display(media);
    let aspect = f64::from(height) / f64::from(width.max(1));
    let width = width.min(PREVIEW_WIDTH);
    PreviewPlan {
        start_secs: start,
        frames: ((length * f64::from(PREVIEW_FPS)).round() as u32).max(1),
        fps: PREVIEW_FPS,
        width: even(width),
        height: even_round(f64::from(width) * aspect),
    }
}

/// Widest thumbnail frame kept (a 16:9 frame at 640×360 is about 30 KiB as a JPEG).
const FRAME_WIDTH: u32 = 640;

fn even(value: u32) -> u32 {
    (value & !1).max(2)
}

fn even_round(value: f64) -> u32 {
    (((value / 2.0).round() as u32) * 2).max(2)
}

/// How a long title is cut (the worker's `split_min_duration`, `first_chunk_duration` and
/// `chunk_duration`, and the HLS segment length).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitRule {
    pub segment_secs: f64,
    /// The first chunk's length: short, so the title is playable soon after its upload
    /// (its first chunk and audio range are what playback waits for).
    pub first_chunk_secs: f64,
    pub chunk_secs: f64,
    /// Titles not longer than this are one item.
    pub split_min_secs: f64,
}

/// How much of the title one audio range covers (after the first, which covers the first
/// chunk). Audio encodes at tens of times real time, so a range of minutes costs a few
/// seconds of one core, and every range decodes the title's audio from its start (cheap, but
/// not free): fewer, longer ranges than video chunks.
pub const AUDIO_RANGE_SECS: f64 = 300.0;

/// The video chunks a title of `duration_secs` is split into: `[start, end)` ranges, each a
/// whole number of `segment_secs` segments starting on a segment boundary — the first of about
/// `first_chunk_secs`, the others of about `chunk_secs`, the last running to the end (and
/// taking a remainder shorter than half a chunk rather than leaving it a chunk of its own).
/// Empty when the title is not longer than `split_min_secs`: a short title is one item.
pub fn chunks(duration_secs: f64, rule: &SplitRule) -> Vec<super::Chunk> {
    let SplitRule { segment_secs, first_chunk_secs, chunk_secs, split_min_secs } = *rule;
    if duration_secs <= split_min_secs || segment_secs <= 0.0 || !duration_secs.is_finite() {
        return Vec::new();
    }
    let per_chunk = ((chunk_secs / segment_secs).round() as u32).max(1);
    let first_chunk = ((first_chunk_secs / segment_secs).round() as u32).max(1);
    let segments = (duration_secs / segment_secs - 1e-6).ceil().max(1.0) as u32;
    let mut chunks = Vec::new();
    let mut first = 0;
    while first < segments {
        let size = if first == 0 { first_chunk } else { per_chunk };
        let next = first + size;
        // The last chunk takes what is left when that is under half a chunk.
        let last = next >= segments || segments - next < per_chunk.div_ceil(2);
        chunks.push(super::Chunk {
            start_secs: f64::from(first) * segment_secs,
            end_secs: (!last).then(|| f64::from(next) * segment_secs),
            first_segment: first,
            ladder: None,
        });
        if last {
            break;
        }
        first = next;
    }
    chunks
}

/// The audio ranges of a title cut into `chunks`: the first chunk's range (so the start of
/// the title is playable as soon as its first chunk is), then runs of whole chunks of at
/// least `range_secs` each, the last to the end. Ranges start where chunks do, so each
/// range's segments are named from its first chunk's first segment and never collide.
pub fn audio_ranges(chunks: &[super::Chunk], range_secs: f64) -> Vec<super::Chunk> {
    let mut ranges: Vec<super::Chunk> = Vec::new();
    for (k, chunk) in chunks.iter().enumerate() {
        match ranges.last_mut() {
            Some(open) if k > 1 && chunk.start_secs - open.start_secs < range_secs => {
                open.end_secs = chunk.end_secs;
            }
            _ => ranges.push(chunk.clone()),
        }
    }
    ranges
}

/// The parts a probed title (`probe`, the report of a [`super::Task::Probe`] run) is split
/// into, or none when it is one item: its video chunks, then its audio — in ranges, or whole
/// when `whole_audio` (loudness normalisation measures and sets one gain for the whole
/// title). Only an HLS transcode is split (the chunks' segments are what is stitched), and
/// not a source whose pictures the encode would not map one to one — an interlaced one
/// (deinterlacing looks at neighbouring fields across a chunk's edge) or one above
/// `max_output_fps` (frames are dropped by a running count from the title's start).
pub fn split_parts(
    probe: &super::EngineReport,
    rule: &SplitRule,
    max_output_fps: f64,
    whole_audio: bool,
) -> Vec<super::Part> {
    let video = &probe.media.video;
    let splittable = probe.mode == Mode::Transcode
        && !probe.renditions.is_empty()
        && probe.renditions.iter().all(|r| r.hls.is_some())
        && !video.interlaced
        && video.fps <= max_output_fps + 0.01;
    if !splittable || rule.split_min_secs <= 0.0 {
        return Vec::new();
    }
    let chunks = chunks(probe.media.duration_secs, rule);
    if chunks.is_empty() {
        return Vec::new();
    }
    let audio = match probe.renditions.iter().any(|r| r.audio_codec.is_some()) {
        false => Vec::new(),
        true if whole_audio => vec![super::Chunk::default()],
        true => audio_ranges(&chunks, AUDIO_RANGE_SECS),
    };
    let video = chunks.into_iter().map(super::Part::Video);
    video.chain(audio.into_iter().map(super::Part::Audio)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::media::{AudioInfo, VideoInfo};
    use crate::jobs::AutoLadder;

    fn media(width: u32, height: u32, audio: bool, bit_rate: Option<u64>) -> MediaInfo {
        MediaInfo {
            format: "mov,mp4,m4a,3gp,3g2,mj2".into(),
            duration_secs: 10.0,
            audio_lead_secs: 0.0,
            container_duration_secs: 10.0,
            video_duration_declared: true,
            bit_rate,
            video: VideoInfo {
                index: 0,
                codec: "h264".into(),
                width,
                height,
                display_width: width,
                display_height: height,
                sample_aspect_ratio: None,
                orientation: crate::engine::media::Orientation::Upright,
                interlaced: false,
                fps: 30.0,
                bit_rate,
                pixel_format: "yuv420p".into(),
                colour: Default::default(),
            },
            audio: audio.then(|| AudioInfo {
                index: 1,
                codec: "aac".into(),
                sample_rate: 44_100,
                channels: 6,
                bit_rate: None,
            }),
            audio_tracks: Vec::new(),
            subtitle_tracks: Vec::new(),
            streams: if audio { 2 } else { 1 },
            warnings: Vec::new(),
        }
    }

    fn spec(preset: Preset, qualities: Qualities, outputs: &[OutputKind]) -> EngineSpec {
        EngineSpec::new(preset, qualities, outputs)
    }

    fn sizes(plan: &EnginePlan) -> Vec<(String, u32, u32)> {
        plan.renditions.iter().map(|r| (r.name.clone(), r.width, r.height)).collect()
    }

    #[test]
    fn auto_takes_every_rung_up_to_the_source_and_never_upscales() {
        let planned = plan(
            &spec(Preset::Hls, Qualities::Auto(AutoLadder::Auto), &[OutputKind::Hls]),
            &media(1280, 720, true, None),
            4.0,
            60.0,
        );
        assert_eq!(
            sizes(&planned),
            vec![("720p".into(), 1280, 720), ("360p".into(), 640, 360), ("144p".into(), 256, 144)]
        );
        assert_eq!(planned.mode, Mode::Transcode);
        assert_eq!(planned.hls_segment_secs, Some(4.0));
        let tiny = plan_for(Qualities::Auto(AutoLadder::Auto), 160, 120);
        assert_eq!(sizes(&tiny), vec![("120p".into(), 160, 120)]);
    }

    fn plan_for(qualities: Qualities, width: u32, height: u32) -> EnginePlan {
        plan(
            &spec(Preset::WebOptimized, qualities, &[OutputKind::Mp4]),
            &media(width, height, true, None),
            4.0,
            60.0,
        )
    }

    #[test]
    fn aspect_ratio_is_kept_with_even_dimensions_and_portrait_uses_the_short_side() {
        let four_three = plan_for(Qualities::List(vec![Quality::P360]), 640, 480);
        assert_eq!(sizes(&four_three), vec![("360p".into(), 480, 360)]);
        let odd = plan_for(Qualities::List(vec![Quality::P144]), 1000, 562);
        assert_eq!(sizes(&odd), vec![("144p".into(), 256, 144)]);
        let portrait = plan_for(Qualities::List(vec![Quality::P720]), 1080, 1920);
        assert_eq!(sizes(&portrait), vec![("720p".into(), 720, 1280)]);
    }

    #[test]
    fn explicit_rungs_above_the_source_are_made_at_source_size_once() {
        let planned = plan_for(
            Qualities::List(vec![Quality::P1080, Quality::P720, Quality::P360]),
            1280,
            720,
        );
        assert_eq!(sizes(&planned), vec![("720p".into(), 1280, 720), ("360p".into(), 640, 360)]);
    }

    #[test]
    fn bit_rates_follow_the_ladder_and_are_capped_by_the_source() {
        let planned = plan_for(Qualities::List(vec![Quality::P720, Quality::P360]), 1920, 1080);
        let rates: Vec<(u64, u64)> = planned
            .renditions
            .iter()
            .map(|r| (r.video_bit_rate, r.audio.as_ref().unwrap().bit_rate))
            .collect();
        assert_eq!(rates, vec![(1_500_000, 128_000), (400_000, 96_000)]);
        let starved = plan(
            &spec(Preset::WebOptimized, Qualities::List(vec![Quality::P720]), &[OutputKind::Mp4]),
            &media(1280, 720, true, Some(200_000)),
            4.0,
            60.0,
        );
        assert_eq!(starved.renditions[0].video_bit_rate, 300_000);
        let audio = starved.renditions[0].audio.as_ref().unwrap();
        assert_eq!((audio.sample_rate, audio.channels), (48_000, 2));
    }

    #[test]
    fn silent_sources_get_no_audio_and_gop_matches_segments() {
        let planned = plan(
            &spec(Preset::Hls, Qualities::List(vec![Quality::P360]), &[OutputKind::Hls]),
            &media(640, 360, false, None),
            4.0,
            60.0,
        );
        assert!(planned.renditions[0].audio.is_none());
        assert_eq!(planned.renditions[0].gop, 120);
    }

    #[test]
    fn default_preset_copies_compatible_sources_and_transcodes_others() {
        let copy = plan(
            &spec(Preset::Default, Qualities::List(vec![]), &[OutputKind::Mp4]),
            &media(640, 360, true, None),
            4.0,
            60.0,
        );
        assert_eq!(copy.mode, Mode::Copy);
        let mut vp8 = media(640, 360, true, None);
        vp8.video.codec = "vp8".into();
        let transcode = plan(
            &spec(Preset::Default, Qualities::List(vec![]), &[OutputKind::Mp4]),
            &vp8,
            4.0,
            60.0,
        );
        assert_eq!(
            (transcode.mode, sizes(&transcode)),
            (Mode::Transcode, vec![("360p".into(), 640, 360)])
        );
    }

    #[test]
    fn thumbnails_cover_the_duration_with_at_most_a_hundred_tiles() {
        let planned = plan(
            &spec(
                Preset::Hls,
                Qualities::List(vec![Quality::P360]),
                &[OutputKind::Hls, OutputKind::Thumbnails],
            ),
            &media(640, 360, true, None),
            4.0,
            60.0,
        );
        let thumbs = planned.thumbnails.unwrap();
        assert_eq!(
            (thumbs.tiles, thumbs.tile_width, thumbs.tile_height, thumbs.columns),
            (10, 160, 90, 10)
        );
        assert_eq!((thumbs.poster_width, thumbs.poster_height), (640, 360));
    }

    #[test]
    fn the_auto_ladder_keeps_the_source_size_between_rungs_and_near_rungs() {
        let auto = || Qualities::Auto(AutoLadder::Auto);
        // 641x359: a 360p-class top rung (358 lines, never upscaled), named 360p.
        assert_eq!(
            sizes(&plan_for(auto(), 641, 359)),
            vec![("360p".into(), 640, 358), ("144p".into(), 258, 144)]
        );
        // 1919x1079 tops out at 1080p, not 720p.
        assert_eq!(sizes(&plan_for(auto(), 1919, 1079))[0], ("1080p".into(), 1918, 1078));
        // 960x540 sits between 360p and 720p: it gets its own rung on top.
        assert_eq!(
            sizes(&plan_for(auto(), 960, 540)),
            vec![("540p".into(), 960, 540), ("360p".into(), 640, 360), ("144p".into(), 256, 144)]
        );
        // 4K stops at 1080p.
        assert_eq!(sizes(&plan_for(auto(), 3840, 2160))[0], ("1080p".into(), 1920, 1080));
        // An explicit 360p on a 359-line source is honoured and named 360p.
        assert_eq!(
            sizes(&plan_for(Qualities::List(vec![Quality::P360]), 641, 359)),
            vec![("360p".into(), 640, 358)]
        );
    }

    #[test]
    fn plans_follow_the_displayed_size() {
        let mut portrait = media(1920, 1080, true, None);
        (portrait.video.display_width, portrait.video.display_height) = (1080, 1920);
        portrait.video.orientation = crate::engine::media::Orientation::Clockwise;
        let planned = plan(
            &spec(
                Preset::WebOptimized,
                Qualities::List(vec![Quality::P720]),
                &[OutputKind::Mp4, OutputKind::Thumbnails],
            ),
            &portrait,
            4.0,
            60.0,
        );
        assert_eq!(sizes(&planned), vec![("720p".into(), 720, 1280)]);
        let thumbs = planned.thumbnails.unwrap();
        assert!(thumbs.poster_height > thumbs.poster_width, "{thumbs:?}");
        let mut pal = media(720, 576, true, None);
        (pal.video.display_width, pal.video.display_height) = (1024, 576);
        pal.video.sample_aspect_ratio = Some([64, 45]);
        assert_eq!(
            sizes(&plan(
                &spec(Preset::Hls, Qualities::Auto(AutoLadder::Auto), &[OutputKind::Hls]),
                &pal,
                4.0,
                60.0
            ))[0],
            ("576p".into(), 1024, 576)
        );
    }

    #[test]
    fn fast_sources_are_planned_at_the_output_cap() {
        let mut slow_motion = media(640, 360, false, None);
        slow_motion.video.fps = 240.0;
        let planned = plan(
            &spec(Preset::Hls, Qualities::List(vec![Quality::P360]), &[OutputKind::Hls]),
            &slow_motion,
            2.0,
            60.0,
        );
        assert_eq!((planned.renditions[0].fps, planned.renditions[0].gop), (60.0, 120));
    }

    #[test]
    fn the_default_preset_reports_the_codecs_it_copies() {
        let mut hevc_opus = media(640, 360, true, Some(800_000));
        hevc_opus.video.codec = "hevc".into();
        hevc_opus.audio.as_mut().unwrap().codec = "opus".into();
        let copy = plan(
            &spec(Preset::Default, Qualities::List(vec![]), &[OutputKind::Mp4]),
            &hevc_opus,
            4.0,
            60.0,
        );
        assert_eq!(copy.mode, Mode::Copy);
        let rendition = &copy.renditions[0];
        assert_eq!(rendition.video_codec, VideoCodec::Hevc);
        assert_eq!(rendition.audio.as_ref().map(|a| a.codec), Some(AudioCodec::Opus));
        assert_eq!(rendition.video_bit_rate, 800_000);
        // MP3 audio cannot be named in the job record: transcoded instead of misreported.
        let mut mp3 = media(640, 360, true, None);
        mp3.audio.as_mut().unwrap().codec = "mp3".into();
        let transcoded = plan(
            &spec(Preset::Default, Qualities::List(vec![]), &[OutputKind::Mp4]),
            &mp3,
            4.0,
            60.0,
        );
        assert_eq!(transcoded.mode, Mode::Transcode);
    }

    fn rule(segment_secs: f64, first: f64, chunk: f64, min: f64) -> SplitRule {
        SplitRule { segment_secs, first_chunk_secs: first, chunk_secs: chunk, split_min_secs: min }
    }

    fn ranges(chunks: &[crate::engine::Chunk]) -> Vec<(f64, Option<f64>, u32)> {
        chunks.iter().map(|c| (c.start_secs, c.end_secs, c.first_segment)).collect()
    }

    #[test]
    fn long_titles_split_into_whole_segment_chunks_the_last_taking_a_short_remainder() {
        use super::chunks;
        assert!(chunks(180.0, &rule(4.0, 60.0, 60.0, 180.0)).is_empty(), "not over the minimum");
        let split = chunks(250.0, &rule(4.0, 60.0, 60.0, 180.0));
        // 60 s is 15 segments of 4 s; 250 s is 63 segments: 15, 15, 15, then 18 (3 left over).
        assert_eq!(
            ranges(&split),
            [
                (0.0, Some(60.0), 0),
                (60.0, Some(120.0), 15),
                (120.0, Some(180.0), 30),
                (180.0, None, 45)
            ]
        );
        // A remainder of half a chunk or more is a chunk of its own.
        let split = chunks(212.0, &rule(4.0, 60.0, 60.0, 180.0));
        assert_eq!(split.len(), 4);
        assert_eq!((split[3].start_secs, split[3].end_secs), (180.0, None));
        // Chunks are whole segments even when the asked length is not.
        let split = chunks(400.0, &rule(6.0, 50.0, 50.0, 180.0));
        assert!(split.iter().all(|c| c.start_secs % 6.0 == 0.0), "{split:?}");
        assert_eq!(split[1].start_secs, 48.0);
    }

    #[test]
    fn the_first_chunk_is_short_so_the_title_plays_soon() {
        let split = chunks(130.0, &rule(4.0, 4.0, 60.0, 30.0));
        // One segment, then 60 s chunks; 130 s is 33 segments: 1, 15, then 17.
        assert_eq!(ranges(&split), [(0.0, Some(4.0), 0), (4.0, Some(64.0), 1), (64.0, None, 16)]);
        // A first chunk shorter than a segment is one segment.
        assert_eq!(chunks(40.0, &rule(4.0, 1.0, 60.0, 30.0))[0].end_secs, Some(4.0));
    }

    #[test]
    fn audio_ranges_start_with_the_first_chunk_then_cover_minutes_each() {
        let split = chunks(1800.0, &rule(4.0, 4.0, 60.0, 30.0));
        let audio = audio_ranges(&split, 300.0);
        assert_eq!(audio[0], split[0], "the first chunk's range");
        // Then whole chunks, at least 300 s each, the last to the end.
        assert_eq!(ranges(&audio[1..3]), [(4.0, Some(304.0), 1), (304.0, Some(604.0), 76)]);
        assert_eq!(audio.last().unwrap().end_secs, None);
        // Ranges tile the title: each starts where the previous ends.
        for pair in audio.windows(2) {
            assert_eq!(pair[0].end_secs, Some(pair[1].start_secs));
        }
        // A short title: the first chunk's audio, then the rest.
        let split = chunks(40.0, &rule(4.0, 4.0, 60.0, 30.0));
        assert_eq!(ranges(&audio_ranges(&split, 300.0)), [(0.0, Some(4.0), 0), (4.0, None, 1)]);
    }
}
