//! What probing found out about a source.

use serde::{Deserialize, Serialize};

/// The probed source: container, duration, the one video stream and the first audio stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// FFmpeg demuxer name, e.g. `mov,mp4,m4a,3gp,3g2,mj2` or `matroska,webm`.
    pub format: String,
    /// What the outputs last: the video stream's duration, plus [`Self::audio_lead_secs`].
    /// Audio, subtitle and data streams that run longer do not count (audio is trimmed to
    /// it, shorter audio padded).
    pub duration_secs: f64,
    /// How long the audio plays before the video's first picture (a camera that starts
    /// recording sound first): the outputs start with the sound and show the first picture
    /// held over it, as players do. 0 when the video starts first (or with the audio).
    #[serde(default)]
    pub audio_lead_secs: f64,
    /// The container's duration (the longest stream, subtitles included).
    #[serde(default)]
    pub container_duration_secs: f64,
    /// Whether the video stream declares its own duration (MP4, AVI, most Matroska writers);
    /// otherwise `duration_secs` is the container's.
    #[serde(default)]
    pub video_duration_declared: bool,
    /// Container bit rate in bits/s when known.
    pub bit_rate: Option<u64>,
    pub video: VideoInfo,
    /// The audio track the renditions carry: the source's default (or first) usable one.
    pub audio: Option<AudioInfo>,
    /// Every usable audio track (languages, commentary), that one first; HLS outputs keep
    /// them all as audio renditions.
    #[serde(default)]
    pub audio_tracks: Vec<AudioTrack>,
    /// Text subtitle tracks, kept as WebVTT captions.
    #[serde(default)]
    pub subtitle_tracks: Vec<SubtitleTrack>,
    pub streams: usize,
    /// What was left out of the source and why (e.g. an audio track whose data is in another
    /// file); carried into the job's result.
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    pub index: usize,
    pub codec: String,
    /// Stored (coded) size of the pictures.
    pub width: u32,
    pub height: u32,
    /// Size as a viewer sees it: pixel aspect ratio and display rotation applied.
    #[serde(default)]
    pub display_width: u32,
    #[serde(default)]
    pub display_height: u32,
    /// Sample (pixel) aspect ratio when not square, e.g. `[64, 45]` for 16:9 PAL.
    #[serde(default)]
    pub sample_aspect_ratio: Option<[u32; 2]>,
    /// How stored pictures are turned to be shown (from the display matrix).
    #[serde(default)]
    pub orientation: Orientation,
    /// Interlaced (field order from the stream, or confirmed on the first decoded frame).
    #[serde(default)]
    pub interlaced: bool,
    /// Average frame rate (frames per second).
    pub fps: f64,
    pub bit_rate: Option<u64>,
    pub pixel_format: String,
    /// How the samples stand for colour and light (HDR or not).
    #[serde(default)]
    pub colour: ColourInfo,
}

/// How a stream's sample values stand for colour and light, in FFmpeg's (and ffprobe's)
/// names — `bt709`, `bt2020`, `smpte2084`, `arib-std-b67`, `bt2020nc`, `tv`, `pc` — `None`
/// where the stream does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ColourInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primaries: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
}

/// Standard or high dynamic range, by the transfer function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DynamicRange {
    /// Standard dynamic range (BT.709, BT.601 and unknown transfers).
    #[default]
    Sdr,
    /// HDR10 and Dolby Vision's base layer: SMPTE ST 2084 (perceptual quantizer).
    Pq,
    /// Hybrid log-gamma (ARIB STD-B67): what recent iPhones and Android phones record.
    Hlg,
}

impl ColourInfo {
    pub fn dynamic_range(&self) -> DynamicRange {
        match self.transfer.as_deref() {
            Some("smpte2084") => DynamicRange::Pq,
            Some("arib-std-b67") => DynamicRange::Hlg,
            _ => DynamicRange::Sdr,
        }
    }
}

/// The transform a player applies to stored pictures before showing them, from the stream's
/// display matrix, in FFmpeg's own terms (what `ffmpeg` inserts when it autorotates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Orientation {
    #[default]
    Upright,
    /// Turn 90° clockwise.
    Clockwise,
    /// Turn 90° counter-clockwise.
    CounterClockwise,
    /// Turn 90° clockwise, then mirror top to bottom (`transpose=clock_flip`).
    ClockwiseFlipped,
    /// Turn 90° counter-clockwise, then mirror top to bottom (`transpose=cclock_flip`).
    CounterClockwiseFlipped,
    UpsideDown,
    MirroredHorizontally,
    MirroredVertically,
}

impl Orientation {
    /// The libavfilter chain that shows stored pictures upright, if any.
    pub fn filter(self) -> Option<&'static str> {
        match self {
            Orientation::Upright => None,
            Orientation::Clockwise => Some("transpose=clock"),
            Orientation::CounterClockwise => Some("transpose=cclock"),
            Orientation::ClockwiseFlipped => Some("transpose=clock_flip"),
            Orientation::CounterClockwiseFlipped => Some("transpose=cclock_flip"),
            Orientation::UpsideDown => Some("hflip,vflip"),
            Orientation::MirroredHorizontally => Some("hflip"),
            Orientation::MirroredVertically => Some("vflip"),
        }
    }

    /// Whether width and height trade places when shown.
    pub fn swaps_axes(self) -> bool {
        matches!(
            self,
            Orientation::Clockwise
                | Orientation::CounterClockwise
                | Orientation::ClockwiseFlipped
                | Orientation::CounterClockwiseFlipped
        )
    }

    /// Reads a display matrix the way FFmpeg's `ffmpeg` tool does: `theta` is the clockwise
    /// angle to turn (the negated, rounded `av_display_rotation_get`), the signs of the
    /// matrix entries tell flips. Angles that are not a multiple of 90° are snapped to the
    /// nearest one (no camera writes them).
    pub fn from_display_matrix(theta: f64, matrix: &[i32; 9]) -> Orientation {
        let theta = theta - 360.0 * (theta / 360.0 + 0.9 / 360.0).floor();
        let quarter = ((theta / 90.0).round() as i64).rem_euclid(4);
        match quarter {
            1 if matrix[3] > 0 => Orientation::CounterClockwiseFlipped,
            1 => Orientation::Clockwise,
            2 => match (matrix[0] < 0, matrix[4] < 0) {
                (true, true) => Orientation::UpsideDown,
                (true, false) => Orientation::MirroredHorizontally,
                (false, true) => Orientation::MirroredVertically,
                (false, false) => Orientation::Upright,
            },
            3 if matrix[3] < 0 => Orientation::ClockwiseFlipped,
            3 => Orientation::CounterClockwise,
            _ if matrix[4] < 0 => Orientation::MirroredVertically,
            _ => Orientation::Upright,
        }
    }
}

/// Audio that starts earlier than this before the video is cut instead of played over a held
/// first picture (a file whose streams lie that far apart is broken, not a camera's).
pub(super) const MAX_AUDIO_LEAD_SECS: f64 = 10.0;

/// How long the audio plays before the first picture, from the streams' start times (seconds):
/// more than one frame (`frame_secs`) and at most [`MAX_AUDIO_LEAD_SECS`], else 0 (timestamps
/// a frame apart are muxing noise).
pub fn audio_lead_secs(video_start: Option<f64>, audio_start: Option<f64>, frame_secs: f64) -> f64 {
    match (video_start, audio_start) {
        (Some(video), Some(audio))
            if video - audio > frame_secs && video - audio <= MAX_AUDIO_LEAD_SECS =>
        {
            video - audio
        }
        _ => 0.0,
    }
}

/// The displayed size of `width`×`height` stored pixels with sample aspect ratio `sar` and
/// `orientation`: non-square pixels widen (or narrow) the picture, a quarter turn swaps axes.
pub fn displayed_size(
    width: u32,
    height: u32,
    sar: Option<[u32; 2]>,
    orientation: Orientation,
) -> (u32, u32) {
    let width = match sar {
        Some([num, den]) if num > 0 && den > 0 => {
            ((f64::from(width) * f64::from(num) / f64::from(den)).round() as u32).max(1)
        }
        _ => width,
    };
    if orientation.swaps_axes() { (height, width) } else { (width, height) }
}

/// One usable audio track: what a player's audio menu shows of it. Both labels come from the
/// file's own tags and are untrusted: only what [`TrackLanguage`] and [`TrackName`] accept
/// is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioTrack {
    pub index: usize,
    #[serde(default)]
    pub language: Option<TrackLanguage>,
    #[serde(default)]
    pub title: Option<TrackName>,
    /// Flagged as the default track by the file.
    #[serde(default)]
    pub default: bool,
}

/// One text subtitle track (labels as [`AudioTrack`]'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtitleTrack {
    pub index: usize,
    /// FFmpeg's codec name (`subrip`, `ass`, `mov_text`, `webvtt`).
    pub codec: String,
    #[serde(default)]
    pub language: Option<TrackLanguage>,
    #[serde(default)]
    pub title: Option<TrackName>,
    #[serde(default)]
    pub default: bool,
    /// Forced subtitles: shown even to viewers who did not ask for captions (foreign-language
    /// lines).
    #[serde(default)]
    pub forced: bool,
}

/// A track's language as HLS and browsers want it (BCP 47 primary language subtag): two
/// lowercase letters where ISO 639-1 has them (`eng` → `en`), else the three-letter ISO 639-2
/// code. Cannot hold anything else: a tag is written into playlists between quotes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
pub struct TrackLanguage(String);

/// ISO 639-2 (bibliographic and terminology) codes with an ISO 639-1 equivalent, the ones
/// media files carry most.
const TWO_LETTER: &[(&str, &str)] = &[
    ("ara", "ar"),
    ("ces", "cs"),
    ("chi", "zh"),
    ("cze", "cs"),
    ("dan", "da"),
    ("deu", "de"),
    ("dut", "nl"),
    ("ell", "el"),
    ("eng", "en"),
    ("fin", "fi"),
    ("fra", "fr"),
    ("fre", "fr"),
    ("ger", "de"),
    ("gre", "el"),
    ("heb", "he"),
    ("hin", "hi"),
    ("hun", "hu"),
    ("ind", "id"),
    ("ita", "it"),
    ("jpn", "ja"),
    ("kor", "ko"),
    ("nld", "nl"),
    ("nor", "no"),
    ("pol", "pl"),
    ("por", "pt"),
    ("ron", "ro"),
    ("rum", "ro"),
    ("rus", "ru"),
    ("spa", "es"),
    ("swe", "sv"),
    ("tha", "th"),
    ("tur", "tr"),
    ("ukr", "uk"),
    ("vie", "vi"),
    ("zho", "zh"),
];

/// English names of the languages above, for a track without a title.
const NAMES: &[(&str, &str)] = &[
    ("ar", "Arabic"),
    ("cs", "Czech"),
    ("da", "Danish"),
    ("de", "German"),
    ("el", "Greek"),
    ("en", "English"),
    ("es", "Spanish"),
    ("fi", "Finnish"),
    ("fr", "French"),
    ("he", "Hebrew"),
    ("hi", "Hindi"),
    ("hu", "Hungarian"),
    ("id", "Indonesian"),
    ("it", "Italian"),
    ("ja", "Japanese"),
    ("ko", "Korean"),
    ("nl", "Dutch"),
    ("no", "Norwegian"),
    ("pl", "Polish"),
    ("pt", "Portuguese"),
    ("ro", "Romanian"),
    ("ru", "Russian"),
    ("sv", "Swedish"),
    ("th", "Thai"),
    ("tr", "Turkish"),
    ("uk", "Ukrainian"),
    ("vi", "Vietnamese"),
    ("zh", "Chinese"),
];

impl TrackLanguage {
    /// A file's language tag: ISO 639-1 or 639-2 letters (any case, a region after `-` or
    /// `_` ignored); `und`, `mis`, `mul`, `zxx` and anything else say nothing.
    pub fn parse(tag: &str) -> Option<TrackLanguage> {
        let primary = tag.split(['-', '_']).next()?.to_ascii_lowercase();
        if !(2..=3).contains(&primary.len()) || !primary.bytes().all(|b| b.is_ascii_lowercase()) {
            return None;
        }
        if matches!(primary.as_str(), "und" | "mis" | "mul" | "zxx") {
            return None;
        }
        let two = TWO_LETTER.iter().find(|(three, _)| *three == primary).map(|(_, two)| *two);
        Some(TrackLanguage(two.map_or(primary, str::to_owned)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ISO 639-2 code MP4 files carry (`en` → `eng`); `None` for a two-letter code not in
    /// the table (MP4 has no room for it).
    pub fn three_letter(&self) -> Option<&str> {
        if self.0.len() == 3 {
            return Some(&self.0);
        }
        TWO_LETTER.iter().find(|(_, two)| *two == self.0).map(|(three, _)| *three)
    }

    /// The language's English name, when it is a common one.
    pub fn english_name(&self) -> Option<&'static str> {
        NAMES.iter().find(|(code, _)| *code == self.0).map(|(_, name)| *name)
    }
}

impl TryFrom<String> for TrackLanguage {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        TrackLanguage::parse(&value)
            .filter(|l| l.0 == value)
            .ok_or_else(|| format!("`{value}` is not a language subtag"))
    }
}

impl From<TrackLanguage> for String {
    fn from(value: TrackLanguage) -> String {
        value.0
    }
}

/// A track's name for a player's menu: printable text, no quotes, backslashes or control
/// characters (written into playlists between quotes), whitespace runs as one space, at most
/// [`TrackName::MAX_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
pub struct TrackName(String);

impl TrackName {
    pub const MAX_CHARS: usize = 64;

    /// What is left of `text` once made safe; `None` when nothing is.
    pub fn clean(text: &str) -> Option<TrackName> {
        let kept: String = text
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .filter(|c| !c.is_control() && !matches!(c, '"' | '\\'))
            .collect();
        let name: String = kept.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
        let name: String = name.chars().take(Self::MAX_CHARS).collect();
        let name = name.trim_end().to_owned();
        (!name.is_empty()).then_some(TrackName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TrackName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        TrackName::clean(&value)
            .filter(|n| n.0 == value)
            .ok_or_else(|| "not a clean track name".to_owned())
    }
}

impl From<TrackName> for String {
    fn from(value: TrackName) -> String {
        value.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioInfo {
    pub index: usize,
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u16,
    pub bit_rate: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_labels_from_files_cannot_break_a_playlist() {
        let language = |tag: &str| TrackLanguage::parse(tag).map(|l| l.0);
        assert_eq!(language("eng").as_deref(), Some("en"));
        assert_eq!(language("FRE").as_deref(), Some("fr"));
        assert_eq!(language("pt-BR").as_deref(), Some("pt"));
        assert_eq!(language("gsw").as_deref(), Some("gsw"));
        for bad in ["und", "", "e", "english", "en\"", "e1", "ε", "en,\n#EXT", "zxx"] {
            assert_eq!(language(bad), None, "{bad:?}");
        }
        let name = |text: &str| TrackName::clean(text).map(|n| n.0);
        assert_eq!(name("Director's commentary").as_deref(), Some("Director's commentary"));
        assert_eq!(name("  Stereo\t\tmix ").as_deref(), Some("Stereo mix"));
        assert_eq!(
            name("x\",URI=\"http://evil/\"\n#EXT-X-ENDLIST").as_deref(),
            Some("x,URI=http://evil/ #EXT-X-ENDLIST")
        );
        assert_eq!(name("\u{0}\u{1b}[31m\"\\"), Some("[31m".to_owned()));
        assert_eq!(name(" \" "), None);
        assert_eq!(name(&"é".repeat(100)).unwrap().chars().count(), TrackName::MAX_CHARS);
        // Deserializing takes only what `clean`/`parse` would give.
        assert!(serde_json::from_str::<TrackName>("\"a\\\"b\"").is_err());
        assert!(serde_json::from_str::<TrackLanguage>("\"eng\"").is_err());
        assert!(serde_json::from_str::<TrackLanguage>("\"en\"").is_ok());
    }

    #[test]
    fn audio_before_the_picture_is_played_when_it_is_plausible() {
        assert_eq!(audio_lead_secs(Some(1.0), Some(0.0), 0.04), 1.0);
        assert_eq!(audio_lead_secs(Some(0.021), Some(0.0), 0.04), 0.0, "muxing noise");
        assert_eq!(audio_lead_secs(Some(0.0), Some(1.0), 0.04), 0.0, "audio starts later");
        assert_eq!(audio_lead_secs(Some(3600.0), Some(0.0), 0.04), 0.0, "broken, not a camera");
        assert_eq!(audio_lead_secs(None, Some(0.0), 0.04), 0.0);
    }

    #[test]
    fn displayed_size_applies_pixel_aspect_then_rotation() {
        assert_eq!(displayed_size(720, 576, Some([64, 45]), Orientation::Upright), (1024, 576));
        assert_eq!(displayed_size(720, 480, Some([32, 27]), Orientation::Upright), (853, 480));
        assert_eq!(displayed_size(1920, 1080, None, Orientation::Clockwise), (1080, 1920));
        assert_eq!(displayed_size(1920, 1080, Some([1, 1]), Orientation::UpsideDown), (1920, 1080));
    }
}
