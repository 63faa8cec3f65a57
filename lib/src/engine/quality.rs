//! Measured picture quality, and the per-title ladder it drives (docs/MEDIA.md, "Quality"):
//! what a job asks for ([`QualityGoal`], [`QualityFloor`]), where the engine samples
//! ([`measure_windows`], [`probe_windows`]), how a rung's quality setting is chosen from trial
//! encodes ([`second_trial`], [`choose_crf`]), and what is reported ([`QualityReport`],
//! [`LadderReport`]). Pure, so it is unit-tested without FFmpeg.

use serde::{Deserialize, Serialize};

use crate::isobmff::child;
use crate::jobs::VideoCodec;

/// The metric every score is on: VMAF (model `vmaf_v0.6.1`, 0–100), measured by libvmaf.
pub const METRIC: &str = "vmaf";

/// The target of `quality: "standard"`, the default.
pub const STANDARD_TARGET: f64 = 93.0;
/// The target of `quality: "high"`.
pub const HIGH_TARGET: f64 = 96.0;
/// Targets a job may name (`target:vmaf=<value>`): below 50 is no longer a picture anyone
/// wants, above 99 no encoder setting reaches on every source.
const TARGET_RANGE: std::ops::RangeInclusive<f64> = 50.0..=99.0;

/// How a job's rates are chosen (`quality` in a job).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum QualityGoal {
    /// Every rung at the codec's one quality setting, whatever the title (no probe).
    Fixed,
    /// Per title, aiming at [`STANDARD_TARGET`].
    #[default]
    Standard,
    /// Per title, aiming at [`HIGH_TARGET`].
    High,
    /// Per title, aiming at this VMAF.
    Target(f64),
}

impl QualityGoal {
    /// `fixed`, `standard`, `high` or `target:vmaf=<50..99>`.
    pub fn parse(text: &str) -> Result<QualityGoal, String> {
        let invalid = || {
            format!(
                "quality must be \"standard\", \"high\", \"fixed\" or \"target:vmaf=<value>\" \
                 with a value from {} to {}, not {text:?}",
                TARGET_RANGE.start(),
                TARGET_RANGE.end()
            )
        };
        match text {
            "fixed" => Ok(QualityGoal::Fixed),
            "standard" => Ok(QualityGoal::Standard),
            "high" => Ok(QualityGoal::High),
            _ => {
                let value = text.strip_prefix("target:vmaf=").ok_or_else(invalid)?;
                // Digits and one point only: no exponent, sign, `inf` or `NaN` spelling.
                let plain = !value.is_empty()
                    && value.len() <= 6
                    && value.chars().all(|c| c.is_ascii_digit() || c == '.')
                    && value.matches('.').count() <= 1;
                let number: f64 = value.parse().ok().filter(|_| plain).ok_or_else(invalid)?;
                if !TARGET_RANGE.contains(&number) {
                    return Err(invalid());
                }
                Ok(QualityGoal::Target(number))
            }
        }
    }

    /// The VMAF aimed at, unless fixed.
    pub fn target(self) -> Option<f64> {
        match self {
            QualityGoal::Fixed => None,
            QualityGoal::Standard => Some(STANDARD_TARGET),
            QualityGoal::High => Some(HIGH_TARGET),
            QualityGoal::Target(value) => Some(value),
        }
    }
}

/// How far below the fixed setting's measured picture a named goal (`standard`, `high`) may
/// aim: within VMAF's noise, so the default never looks worse than the one-size ladder did —
/// it spends fewer bits where the fixed setting overshoots, and more where it falls short.
pub const FIXED_MARGIN: f64 = 0.5;

impl QualityGoal {
    /// The VMAF a rung is aimed at, after its fixed setting measured `fixed_vmaf` on the
    /// probe: the goal's target, raised for a named goal to at most [`FIXED_MARGIN`] below
    /// `fixed_vmaf`. A `target:` goal is taken as asked (a job may want fewer bits than the
    /// fixed setting spends).
    pub fn aim(self, fixed_vmaf: f64) -> Option<f64> {
        let target = self.target()?;
        Some(match self {
            QualityGoal::Standard | QualityGoal::High => {
                target.max((fixed_vmaf - FIXED_MARGIN).min(*TARGET_RANGE.end()))
            }
            QualityGoal::Fixed | QualityGoal::Target(_) => target,
        })
    }
}

/// Targets are parsed from plain decimals in a range: never NaN.
impl Eq for QualityGoal {}

impl std::fmt::Display for QualityGoal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QualityGoal::Fixed => f.write_str("fixed"),
            QualityGoal::Standard => f.write_str("standard"),
            QualityGoal::High => f.write_str("high"),
            QualityGoal::Target(value) => write!(f, "target:vmaf={value}"),
        }
    }
}

impl Serialize for QualityGoal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for QualityGoal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        QualityGoal::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// What happens to a job whose rendition is measured below its floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FloorAction {
    /// The job fails with `engine.quality_below_floor` (and is not retried: the same source
    /// gives the same picture).
    #[default]
    Fail,
    /// The job completes with a warning in its result.
    Warn,
}

/// The lowest mean VMAF a rendition may have.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QualityFloor {
    pub vmaf: f64,
    #[serde(default)]
    pub action: FloorAction,
}

/// Floors are validated scores: never NaN.
impl Eq for QualityFloor {}

impl QualityFloor {
    /// A floor must be a VMAF score (0 turns it off, so it is not a floor).
    pub fn validate(vmaf: f64) -> Result<f64, String> {
        if vmaf.is_finite() && vmaf > 0.0 && vmaf <= 100.0 {
            Ok(vmaf)
        } else {
            Err(format!("quality_floor must be a VMAF score above 0 and at most 100, not {vmaf}"))
        }
    }

    /// The renditions measured below this floor, as a sentence (none: `None`).
    pub fn misses(&self, renditions: &[(String, Option<QualityReport>)]) -> Option<String> {
        let below: Vec<String> = renditions
            .iter()
            .filter_map(|(name, quality)| {
                let quality = quality.as_ref()?;
                (quality.mean < self.vmaf).then(|| format!("{name} VMAF {:.1}", quality.mean))
            })
            .collect();
        (!below.is_empty())
            .then(|| format!("below the quality floor of VMAF {}: {}", self.vmaf, below.join(", ")))
    }
}

/// A rendition's measured picture quality: VMAF of sampled windows of its decoded video
/// against the picture its encoder was given (the same size: the encoding's loss, not the
/// smaller size's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QualityReport {
    /// `vmaf` (model `vmaf_v0.6.1`).
    pub metric: String,
    /// Mean over the frames scored.
    pub mean: f64,
    /// The 5th percentile of the frames' scores: how the worst moments look.
    pub p5: f64,
    pub min: f64,
    /// Frames scored.
    pub frames: u32,
}

impl QualityReport {
    /// The report of per-frame `scores` (none: `None`).
    pub fn of(scores: &[f64]) -> Option<QualityReport> {
        let mut sorted: Vec<f64> = scores.iter().copied().filter(|s| s.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
        // Nearest rank.
        let rank = ((sorted.len() as f64 * 0.05).ceil() as usize).clamp(1, sorted.len());
        Some(QualityReport {
            metric: METRIC.to_owned(),
            mean: round2(mean),
            p5: round2(sorted[rank - 1]),
            min: round2(sorted[0]),
            frames: u32::try_from(sorted.len()).unwrap_or(u32::MAX),
        })
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Per-frame scores of each rendition (by name), as a chunk of a split title writes them
/// (`quality.json`) for the stitch to pool.
pub type QualityScores = std::collections::BTreeMap<String, Vec<f64>>;

/// The file a part's scores are in, in its output folder.
pub const SCORES_FILE: &str = "quality.json";

/// Seconds of each measured window…
const MEASURE_WINDOW_SECS: f64 = 2.0;
/// …unless the windows would be more than this share of the title: in a window every
/// picture is kept and decoded again and VMAF's motion feature runs on each (a 10 s title's
/// 6 s of windows still cost 5–15 % of the job's CPU with every tenth picture scored)…
const MEASURE_WINDOWS_SHARE: f64 = 0.10;
/// …nor shorter than this: several pictures at any frame rate.
const MEASURE_MIN_WINDOW_SECS: f64 = 0.25;
/// One measured window every this many seconds of a long title…
const MEASURE_EVERY_SECS: f64 = 120.0;
/// …and at least this many (fewer only when the title is shorter).
const MEASURE_MIN_WINDOWS: usize = 3;

/// Where a title of `duration_secs` is measured: `[start, end)` windows (seconds on the
/// title's timeline), each starting on a keyframe (`keyframe_secs` apart, which the encoders
/// force), spread over the title — at least [`MEASURE_MIN_WINDOWS`], one per
/// [`MEASURE_EVERY_SECS`] — of [`MEASURE_WINDOW_SECS`], shorter in a title under a minute
/// (a tenth of it in all). Each window is scored from its keyframe on, so none needs frames
/// from before it.
pub fn measure_windows(duration_secs: f64, keyframe_secs: f64) -> Vec<(f64, f64)> {
    let count = ((duration_secs / MEASURE_EVERY_SECS).round() as usize).max(MEASURE_MIN_WINDOWS);
    let length = (duration_secs * MEASURE_WINDOWS_SHARE / count as f64)
        .clamp(MEASURE_MIN_WINDOW_SECS, MEASURE_WINDOW_SECS)
        .min(keyframe_secs);
    spread(duration_secs, keyframe_secs, count, length)
}

/// The share of a title's pictures the meter scores at most. A picture scored at each of
/// three rungs costs about three quarters of encoding it at them (6 s of windows scored in
/// full on a 10 s title added 45 % to the job's CPU, docs/BENCHMARKS.md a.).
const MEASURE_SCORED_SHARE: f64 = 0.05;
/// …but every fourth picture of a window at least: a window of [`MEASURE_MIN_WINDOW_SECS`]
/// at 24 fps keeps a scored picture after its first (which is left out, scored as still).
const MEASURE_MAX_EVERY: u32 = 4;

/// Every how many pictures of its `windows` the meter scores, for a title of
/// `duration_secs`: each picture where the windows are at most [`MEASURE_SCORED_SHARE`] of
/// the title (two minutes and longer), fewer in the windows of a shorter title. The scored
/// pictures are spread over each window (every `every`th from its first, the first itself
/// then left out of the scores; VMAF's motion feature still sees each picture), and a split
/// title's chunks, sharing the title's duration, score the same ones.
pub fn measure_every(duration_secs: f64, windows: &[(f64, f64)]) -> u32 {
    if !(duration_secs.is_finite() && duration_secs > 0.0) {
        return 1;
    }
    let measured: f64 = windows.iter().map(|(start, end)| end - start).sum();
    // Less a rounding error: windows of exactly the share score every picture.
    let every = (measured / (duration_secs * MEASURE_SCORED_SHARE) - 1e-9).ceil();
    (every.max(1.0) as u32).min(MEASURE_MAX_EVERY)
}

/// Which pictures of a window of `pictures` the meter scores, by their index in it: every
/// `every`th from the first, the first then left out unless it is the only one — VMAF's
/// motion feature has no picture before a window's first and scores it as a still one
/// (55 against 82 on a moving test pattern), where a continuous measurement does not.
pub fn scored_in_window(pictures: usize, every: u32) -> Vec<usize> {
    let scored: Vec<usize> = (0..pictures).step_by(every.max(1) as usize).collect();
    let from = usize::from(scored.len() > 1);
    scored[from..].to_vec()
}

/// Seconds of each probe window at most…
const PROBE_WINDOW_SECS: f64 = 1.0;
/// …and at least: a window starts from a keyframe, so a shorter one is mostly its keyframe.
const PROBE_MIN_WINDOW_SECS: f64 = 0.5;
/// The share of the title the probe encodes (per trial): each trial costs about what encoding
/// this share of the title at every rung does.
const PROBE_SHARE: f64 = 0.025;
const PROBE_MAX_WINDOWS: usize = 8;

/// Where the complexity probe samples a title: windows spread over it, [`PROBE_SHARE`] of it
/// in all (one window at least, [`PROBE_MAX_WINDOWS`] at most; a title under 20 s, which even
/// one shortest window is more of), each encoded apart at each trial setting. Windows are
/// as many as needed to keep each within [`PROBE_WINDOW_SECS`], as long as needed to make up
/// the share (at least [`PROBE_MIN_WINDOW_SECS`]), and divide the keyframe interval evenly,
/// so a window's start and end are both on its own grid.
pub fn probe_windows(duration_secs: f64, keyframe_secs: f64) -> Vec<(f64, f64)> {
    if !(duration_secs.is_finite() && duration_secs > 0.0 && keyframe_secs > 0.0) {
        return Vec::new();
    }
    let share = duration_secs * PROBE_SHARE;
    let count = ((share / PROBE_WINDOW_SECS).ceil() as usize).clamp(1, PROBE_MAX_WINDOWS);
    let wanted = (share / count as f64).clamp(PROBE_MIN_WINDOW_SECS, PROBE_WINDOW_SECS);
    let length = keyframe_secs / (keyframe_secs / wanted).ceil().max(1.0);
    spread(duration_secs, keyframe_secs, count, length)
}

/// A probe trial scores every this many pictures at most. Scoring every picture was 40–50 %
/// of the probe's CPU, every 3rd 26–36 % (1 s windows, talking head and slides); every 6th
/// moved a trial's mean by at most 0.3 against every 3rd on the same windows, less than one
/// CRF step, and took 1.0–1.1 CPU s less per second probed.
const PROBE_MAX_EVERY: u32 = 6;
/// …but a window keeps at least this many scored pictures (its first is never one, see
/// [`scored_in_window`]).
const PROBE_MIN_SCORED: usize = 4;

/// Every how many pictures of a probe window of `pictures` a trial scores: every
/// [`PROBE_MAX_EVERY`]th, more often in a short window, to score [`PROBE_MIN_SCORED`].
pub fn probe_score_every(pictures: usize) -> u32 {
    let every = pictures / (PROBE_MIN_SCORED + 1);
    (every.max(1) as u32).min(PROBE_MAX_EVERY)
}

/// `count` windows of `length` seconds at the middles of `count` equal stretches of the
/// title, each moved back to a keyframe, none repeated, the last cut at the title's end.
fn spread(duration_secs: f64, keyframe_secs: f64, count: usize, length: f64) -> Vec<(f64, f64)> {
    if !(duration_secs.is_finite() && duration_secs > 0.0 && keyframe_secs > 0.0) {
        return Vec::new();
    }
    let mut windows: Vec<(f64, f64)> = Vec::new();
    for k in 0..count {
        let middle = duration_secs * (k as f64 + 0.5) / count as f64;
        let start = (middle / keyframe_secs).floor() * keyframe_secs;
        if windows.last().is_some_and(|(last, _)| *last >= start) {
            continue;
        }
        windows.push((start, (start + length).min(duration_secs)));
    }
    windows
}

/// Bits/s a trial's window of `window_secs` would have taken with keyframes only as often as
/// the title's encode has them (every `keyframe_secs`): the window starts on one of its own
/// (`key_bytes` of its `bytes`), which in a short window of a still picture is most of what
/// it spends — a slide's 2/3 s window spent 90 % of its cap where the whole encode, one
/// keyframe every 2 s, spent 60 %.
pub fn title_rate(bytes: u64, key_bytes: u64, window_secs: f64, keyframe_secs: f64) -> u64 {
    if window_secs.is_nan() || window_secs <= 0.0 {
        return 0;
    }
    let key_bytes = key_bytes.min(bytes) as f64;
    let keys_in_window = match keyframe_secs > window_secs {
        true => window_secs / keyframe_secs,
        false => 1.0,
    };
    ((bytes as f64 - key_bytes + key_bytes * keys_in_window) * 8.0 / window_secs).round() as u64
}

/// The size of the first sample of an fMP4 media segment (the keyframe a probe window's one
/// segment starts on): from the first `trun` of the first `moof`'s first `traf`, or its
/// `tfhd`'s default sample size. `None` when the segment says neither.
pub fn fmp4_first_sample_bytes(segment: &[u8]) -> Option<u64> {
    let traf = child(child(segment, b"moof")?, b"traf")?;
    let trun = child(traf, b"trun")?;
    let flags = be32(trun, 0)? & 0x00ff_ffff;
    if be32(trun, 4)? == 0 {
        return None;
    }
    // Version and flags, sample count, then the optional data offset and first sample flags.
    let first = 8 + 4 * (usize::from(flags & 0x1 != 0) + usize::from(flags & 0x4 != 0));
    if flags & 0x200 != 0 {
        let at = first + 4 * usize::from(flags & 0x100 != 0);
        return be32(trun, at).map(u64::from);
    }
    let tfhd = child(traf, b"tfhd")?;
    let tfhd_flags = be32(tfhd, 0)? & 0x00ff_ffff;
    if tfhd_flags & 0x10 == 0 {
        return None;
    }
    // Version and flags, track id, then base data offset, description index and duration.
    let at = 8
        + 8 * usize::from(tfhd_flags & 0x1 != 0)
        + 4 * usize::from(tfhd_flags & 0x2 != 0)
        + 4 * usize::from(tfhd_flags & 0x8 != 0);
    be32(tfhd, at).map(u64::from)
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// One trial encode of a rung's probe windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Trial {
    pub crf: u8,
    /// Mean VMAF over the windows.
    pub vmaf: f64,
    /// Bits/s the windows took, their keyframe counted as often as the title's encode has one
    /// ([`title_rate`]).
    pub bit_rate: u64,
}

/// What the per-title probe chose for one rung, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RungChoice {
    pub name: String,
    /// The quality setting chosen (the codec's CRF scale).
    pub crf: u8,
    /// The VMAF the trials predict at `crf`.
    pub expected_vmaf: f64,
    pub trials: Vec<Trial>,
    /// Dropped rungs are not encoded.
    pub kept: bool,
    /// Why, in words.
    pub reason: String,
}

/// The per-title decision: one per title (a split title's chunks all use it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LadderReport {
    /// The job's `quality` (`standard`, `high`, `target:vmaf=…`).
    pub goal: String,
    /// The VMAF aimed at.
    pub target: f64,
    pub rungs: Vec<RungChoice>,
    /// Seconds of source the probe encoded per trial.
    pub probe_media_secs: f64,
    /// CPU seconds the probe took (its trial encodes and scoring).
    pub probe_cpu_secs: f64,
}

impl LadderReport {
    /// The choice for the rung named `name`.
    pub fn rung(&self, name: &str) -> Option<&RungChoice> {
        self.rungs.iter().find(|r| r.name == name)
    }
}

/// The range of quality settings per-title rates choose from: the codec's default (what
/// `fixed` uses) minus `below`, plus `above` — wide enough for slides and grain alike, not so
/// wide that a misjudged probe spends without limit or smears the picture.
pub fn crf_range(codec: VideoCodec) -> (u8, u8) {
    let default = super::plan::constant_rate_factor(codec);
    let (below, above, max) = match codec {
        VideoCodec::H264 | VideoCodec::Hevc => (6, 10, 51),
        VideoCodec::Av1 | VideoCodec::Vp9 => (10, 15, 63),
    };
    (default.saturating_sub(below), (default + above).min(max))
}

/// VMAF points one step of CRF costs, assumed before a second trial measures it (about what
/// x264 shows near CRF 23 on camera footage).
const ASSUMED_SLOPE: f64 = 1.0;
/// Within this many VMAF points of the target, the first trial's setting is kept.
const CLOSE_ENOUGH: f64 = 0.5;
/// The slope measured between two trials is held to this range (a flat or inverted
/// measurement on a short window would send the setting to a bound).
const SLOPE_RANGE: (f64, f64) = (0.15, 4.0);
/// Below its aim, a rung whose trials gain less than this per CRF step (each step costs
/// about a tenth more bits) keeps its setting: the cap holds it, or the picture does not get
/// better for the bits.
pub const WORTH_SLOPE: f64 = 0.3;
/// The second trial is at least this many CRF steps from the first: a slope measured over
/// one step of a one-second window is mostly noise.
const MIN_TRIAL_STEP: i32 = 3;

/// A trial at or above this share of its rung's cap rate is close to the cap: a lower setting
/// has little room to spend.
const NEAR_CAP: f64 = 0.9;

/// Whether a rung's trial below its `aim` spent close to the rung's cap (`cap_bits` a
/// second): the cap holds it, so no lower setting is tried (nor chosen).
pub fn held_by_cap(trial: &Trial, cap_bits: u64, aim: f64) -> bool {
    trial.vmaf < aim && trial.bit_rate as f64 >= NEAR_CAP * cap_bits as f64
}

/// The setting of the second trial after a first at `first` measured `vmaf` (none when the
/// first is close enough to `target`): where the assumed slope reaches the target.
pub fn second_trial(codec: VideoCodec, first: u8, vmaf: f64, target: f64) -> Option<u8> {
    if (vmaf - target).abs() < CLOSE_ENOUGH {
        return None;
    }
    let (low, high) = crf_range(codec);
    let step = ((vmaf - target) / ASSUMED_SLOPE).round() as i32;
    let step = match step.abs() < MIN_TRIAL_STEP {
        true => MIN_TRIAL_STEP * (vmaf - target).signum() as i32,
        false => step,
    };
    let next = (i32::from(first) + step).clamp(i32::from(low), i32::from(high)) as u8;
    (next != first).then_some(next)
}

/// The largest setting (fewest bits) whose predicted VMAF reaches `target`, from the trials
/// (a line through the two nearest, or one trial and the assumed slope), within
/// [`crf_range`]; with the VMAF predicted there.
pub fn choose_crf(codec: VideoCodec, trials: &[Trial], target: f64) -> (u8, f64) {
    let (low, high) = crf_range(codec);
    let Some(first) = trials.first() else {
        return (super::plan::constant_rate_factor(codec), target);
    };
    let measured = match trials {
        [a, b, ..] if a.crf != b.crf => {
            Some((a.vmaf - b.vmaf) / (f64::from(b.crf) - f64::from(a.crf)))
        }
        _ => None,
    };
    if measured.is_some_and(|slope| slope < WORTH_SLOPE) && trials.iter().all(|t| t.vmaf < target) {
        // A lower setting bought too little (see `WORTH_SLOPE`): the trials' highest
        // setting, not bits spent for nothing.
        let pick = trials.iter().max_by_key(|t| t.crf).unwrap_or(first);
        return (pick.crf, pick.vmaf);
    }
    let slope = measured.map_or(ASSUMED_SLOPE, |s| s.clamp(SLOPE_RANGE.0, SLOPE_RANGE.1));
    // The trial nearest the target anchors the line.
    let anchor = trials
        .iter()
        .min_by(|a, b| (a.vmaf - target).abs().total_cmp(&(b.vmaf - target).abs()))
        .unwrap_or(first);
    let exact = f64::from(anchor.crf) + (anchor.vmaf - target) / slope;
    // A flatter measurement than any real slope (a still picture still being refined when
    // the window ends) says nothing beyond the trials: no setting past the highest tried.
    let high = match measured.is_some_and(|s| s < SLOPE_RANGE.0) {
        true => trials.iter().map(|t| t.crf).max().unwrap_or(high).min(high),
        false => high,
    };
    // Rounded down: at or above the target rather than just under it.
    let crf = (exact.floor().clamp(f64::from(low), f64::from(high))) as u8;
    let expected = anchor.vmaf - slope * (f64::from(crf) - f64::from(anchor.crf));
    (crf, round2(expected.min(100.0)))
}

/// The lowest setting the cap leaves a rung, when its trials reach close to the cap
/// (`cap_bits` a second): a setting whose rate the trials predict (log-linear between them) at
/// [`NEAR_CAP`] of the cap or more is held there by it, and a window, starting with the
/// encoder's buffer nearly full, looks better than the title then will (grain's 144p: 94.2 in
/// a window at CRF 20 at 1.3× its cap, 91.1 encoded whole at CRF 21). `None`: no trial came
/// close to the cap.
pub fn lowest_under_cap(trials: &[Trial], cap_bits: u64) -> Option<u8> {
    let limit = NEAR_CAP * cap_bits as f64;
    let mut points: Vec<(f64, f64)> = trials
        .iter()
        .filter(|t| t.bit_rate > 0)
        .map(|t| (f64::from(t.crf), t.bit_rate as f64))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !points.iter().any(|&(_, rate)| rate >= limit) {
        return None;
    }
    let crossing = match points[..] {
        [(c0, r0), (c1, r1), ..] if c0 != c1 && r0 != r1 => {
            c0 + (limit.ln() - r0.ln()) * (c1 - c0) / (r1.ln() - r0.ln())
        }
        // One trial (or two alike), close to the cap: nothing lower than it.
        _ => points[0].0,
    };
    let highest = points.last().map_or(crossing, |p| p.0);
    Some(crossing.ceil().clamp(points[0].0, highest.max(points[0].0)) as u8)
}

/// The setting a rung's cap (`cap_bits` a second) moves a `chosen` one to, if any: only a
/// setting below the first trial's (the fixed one: more bits than it) is bounded, up to
/// [`lowest_under_cap`] and never past the first trial's — the cap taking bits from the
/// fixed setting where a title needs more is no reason to take more away.
pub fn cap_bound(trials: &[Trial], cap_bits: u64, chosen: u8) -> Option<u8> {
    let fixed = trials.first()?.crf;
    let lowest = lowest_under_cap(trials, cap_bits)?;
    (chosen < fixed && chosen < lowest).then(|| lowest.min(fixed))
}

/// The VMAF the trials predict at `crf`: on the line through the two nearest (the trial's own
/// score with one).
pub fn vmaf_at(trials: &[Trial], crf: u8) -> f64 {
    let mut near: Vec<&Trial> = trials.iter().collect();
    near.sort_by_key(|t| (i32::from(t.crf) - i32::from(crf)).abs());
    let value = match near[..] {
        [a, b, ..] if a.crf != b.crf => {
            let slope = (b.vmaf - a.vmaf) / (f64::from(b.crf) - f64::from(a.crf));
            a.vmaf + slope * (f64::from(crf) - f64::from(a.crf))
        }
        [a, ..] => a.vmaf,
        [] => 0.0,
    };
    round2(value.min(100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_parse_from_their_documented_spellings_only() {
        assert_eq!(QualityGoal::parse("standard"), Ok(QualityGoal::Standard));
        assert_eq!(QualityGoal::parse("high"), Ok(QualityGoal::High));
        assert_eq!(QualityGoal::parse("fixed"), Ok(QualityGoal::Fixed));
        assert_eq!(QualityGoal::parse("target:vmaf=94.5"), Ok(QualityGoal::Target(94.5)));
        for bad in [
            "",
            "Standard",
            "target:vmaf=",
            "target:vmaf=100",
            "target:vmaf=49.9",
            "target:vmaf=NaN",
            "target:vmaf=inf",
            "target:vmaf=9e1",
            "target:vmaf=-95",
            "target:vmaf=95..",
            "target:psnr=40",
            "target:vmaf=95 ",
        ] {
            assert!(QualityGoal::parse(bad).is_err(), "{bad:?} accepted");
        }
        for goal in [QualityGoal::Standard, QualityGoal::High, QualityGoal::Target(90.0)] {
            assert_eq!(QualityGoal::parse(&goal.to_string()), Ok(goal));
        }
    }

    #[test]
    fn named_goals_never_aim_noticeably_below_the_fixed_setting() {
        // The fixed setting overshoots: a named goal stays within the margin of it…
        assert_eq!(QualityGoal::Standard.aim(96.2), Some(95.7));
        assert_eq!(QualityGoal::High.aim(98.0), Some(97.5));
        // …but never aims above what any setting reaches.
        assert_eq!(QualityGoal::Standard.aim(100.0), Some(99.0));
        // It falls short: the target.
        assert_eq!(QualityGoal::Standard.aim(88.0), Some(STANDARD_TARGET));
        assert_eq!(QualityGoal::High.aim(93.0), Some(HIGH_TARGET));
        // A job naming its target gets it, fewer bits than fixed included.
        assert_eq!(QualityGoal::Target(80.0).aim(96.2), Some(80.0));
        assert_eq!(QualityGoal::Fixed.aim(96.2), None);
    }

    #[test]
    fn a_report_pools_the_mean_and_the_fifth_percentile() {
        let scores: Vec<f64> = (1..=100).map(f64::from).collect();
        let report = QualityReport::of(&scores).unwrap();
        assert_eq!((report.mean, report.p5, report.min, report.frames), (50.5, 5.0, 1.0, 100));
        assert_eq!(QualityReport::of(&[f64::NAN]), None);
    }

    #[test]
    fn windows_start_on_keyframes_spread_over_the_title() {
        let windows = measure_windows(600.0, 4.0);
        assert_eq!(windows.len(), 5);
        for (start, end) in &windows {
            assert_eq!(start % 4.0, 0.0);
            assert_eq!(end - start, 2.0);
        }
        assert!(windows[0].0 < 120.0 && windows[4].0 > 480.0);
        // A short title: fewer windows than asked rather than repeated ones, cut at its end.
        assert_eq!(measure_windows(3.0, 4.0), vec![(0.0, 0.25)]);
        assert_eq!(measure_windows(0.1, 2.0), vec![(0.0, 0.1)]);
        assert!(measure_windows(f64::NAN, 4.0).is_empty());
        // The probe encodes 2.5 % of the title, in windows of at most a second that divide the
        // keyframe interval: 40 s in one of 1 s, 30 s in one of 2/3 s (not 1 s: 3.3 %)…
        let lengths = |duration: f64, keyframe: f64| -> Vec<f64> {
            let round = |secs: f64| (secs * 1e6).round() / 1e6;
            probe_windows(duration, keyframe)
                .iter()
                .map(|(start, end)| round(end - start))
                .collect()
        };
        assert_eq!(lengths(40.0, 4.0), [1.0]);
        assert_eq!(lengths(30.0, 2.0), [0.666667]);
        assert_eq!(lengths(60.0, 2.0), [0.666667; 2]);
        assert_eq!(lengths(120.0, 4.0), [1.0; 3]);
        assert_eq!(lengths(7200.0, 4.0), [1.0; 8]);
        // …and a short title in one half-second window, more than its share.
        assert_eq!(lengths(10.0, 2.0), [0.5]);
        assert_eq!(lengths(6.0, 5.0), [0.5]);
        for (start, _) in probe_windows(7200.0, 4.0) {
            assert_eq!(start % 4.0, 0.0);
        }
        assert!(probe_windows(f64::NAN, 2.0).is_empty());
    }

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn an_fmp4_segment_s_first_sample_is_read_from_its_trun_or_tfhd() {
        let full = |flags: u32, rest: &[u32]| -> Vec<u8> {
            let mut out = flags.to_be_bytes().to_vec();
            rest.iter().for_each(|v| out.extend_from_slice(&v.to_be_bytes()));
            out
        };
        let segment = |tfhd: Vec<u8>, trun: Vec<u8>| -> Vec<u8> {
            let traf = [boxed(b"tfhd", &tfhd), boxed(b"trun", &trun)].concat();
            let moof = [boxed(b"mfhd", &full(0, &[1])), boxed(b"traf", &traf)].concat();
            [boxed(b"styp", b"msdhiso8"), boxed(b"moof", &moof), boxed(b"mdat", &[0; 16])].concat()
        };
        let tfhd = full(0x02_0000, &[1]);
        // Data offset, first sample flags, then per sample a duration and a size (FFmpeg's).
        let trun = full(0x305, &[2, 120, 0x0200_0000, 512, 50_000, 512, 900]);
        assert_eq!(fmp4_first_sample_bytes(&segment(tfhd.clone(), trun)), Some(50_000));
        // Sizes only.
        let trun = full(0x200, &[2, 50_000, 900]);
        assert_eq!(fmp4_first_sample_bytes(&segment(tfhd.clone(), trun)), Some(50_000));
        // No sizes in the run: the track fragment's default (after a description index).
        let no_sizes = full(0x001, &[2, 120]);
        let tfhd_default = full(0x12, &[1, 1, 7_000]);
        assert_eq!(fmp4_first_sample_bytes(&segment(tfhd_default, no_sizes.clone())), Some(7_000));
        assert_eq!(fmp4_first_sample_bytes(&segment(tfhd, no_sizes)), None);
        // Truncated or lying sizes, an empty run, no fragment: nothing, and no panic.
        let good = segment(full(0x02_0000, &[1]), full(0x200, &[2, 50_000, 900]));
        for cut in 0..good.len() {
            let _ = fmp4_first_sample_bytes(&good[..cut]);
        }
        let mut lying = good.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(fmp4_first_sample_bytes(&lying), None);
        assert_eq!(fmp4_first_sample_bytes(&segment(full(0, &[1]), full(0x200, &[0]))), None);
        assert_eq!(fmp4_first_sample_bytes(&boxed(b"mdat", &[0; 32])), None);
        assert_eq!(fmp4_first_sample_bytes(&[0, 0, 0, 1, b'm', b'o', b'o', b'f']), None);
    }

    #[test]
    fn a_window_s_keyframe_counts_as_often_as_the_title_has_one() {
        // 2/3 s of a still slide: 50 kB keyframe, 10 kB after it; the title has a keyframe
        // every 2 s, so a third of the keyframe is this window's.
        let rate = title_rate(60_000, 50_000, 2.0 / 3.0, 2.0);
        assert_eq!(rate, ((10_000.0 + 50_000.0 / 3.0) * 8.0 * 1.5_f64).round() as u64);
        assert!(rate < 60_000 * 8 * 3 / 2);
        // A window as long as the keyframe interval, or longer, is taken as it is.
        assert_eq!(title_rate(60_000, 50_000, 2.0, 2.0), 240_000);
        assert_eq!(title_rate(60_000, 50_000, 4.0, 2.0), 120_000);
        // A keyframe said to be larger than the window counts as all of it.
        assert_eq!(title_rate(10_000, 50_000, 1.0, 2.0), 40_000);
        assert_eq!(title_rate(10_000, 0, 0.0, 2.0), 0);
    }

    #[test]
    fn a_setting_the_trials_put_close_to_the_cap_is_as_low_as_a_rung_goes() {
        let trial = |crf, vmaf, bit_rate| Trial { crf, vmaf, bit_rate };
        // Grain's 144p (cap 100 kb/s): 85 kb/s at CRF 23, 130 kb/s at CRF 20 — the rates reach
        // 90 kb/s between 22 and 23: no lower than 23.
        let grain = [trial(23, 91.0, 85_000), trial(20, 94.2, 130_000)];
        assert_eq!(lowest_under_cap(&grain, 100_000), Some(23));
        // 60 and 95 kb/s: 90 is reached just above CRF 20, so 21 is as low as it goes.
        let nearer = [trial(23, 91.0, 60_000), trial(20, 94.2, 95_000)];
        assert_eq!(lowest_under_cap(&nearer, 100_000), Some(21));
        // Far from the cap: no limit.
        assert_eq!(
            lowest_under_cap(&[trial(23, 91.0, 20_000), trial(20, 94.0, 30_000)], 100_000),
            None
        );
        // One trial, at the cap: nothing lower than it.
        assert_eq!(lowest_under_cap(&[trial(23, 80.0, 99_000)], 100_000), Some(23));
        // Only a setting below the first trial's is bounded, and never past it: CRF 21 for
        // grain's 144p goes to 23; animation's 1080p at its cap (3.5 Mb/s at CRF 23, 2.6 at
        // 26) keeps the fixed CRF 23 it chose.
        assert_eq!(cap_bound(&grain, 100_000, 21), Some(23));
        assert_eq!(cap_bound(&nearer, 100_000, 19), Some(21));
        assert_eq!(cap_bound(&nearer, 100_000, 21), None);
        let animation = [trial(23, 96.1, 3_500_000), trial(26, 94.0, 2_600_000)];
        assert_eq!(lowest_under_cap(&animation, 3_500_000), Some(25));
        assert_eq!(cap_bound(&animation, 3_500_000, 23), None);
        assert_eq!(cap_bound(&animation, 3_500_000, 25), None);
        let both_above = [trial(23, 80.0, 3_600_000), trial(20, 84.0, 4_000_000)];
        assert_eq!(cap_bound(&both_above, 3_500_000, 20), Some(23));
        // The VMAF expected there, on the trials' line.
        assert_eq!(vmaf_at(&grain, 23), 91.0);
        assert_eq!(vmaf_at(&grain, 22), 92.07);
        assert_eq!(vmaf_at(&[trial(23, 91.0, 1)], 20), 91.0);
    }

    #[test]
    fn a_probe_window_keeps_enough_scored_pictures() {
        // 1 s at 30 fps: every 6th; 2/3 s at 30 or 24 fps and 1/2 s at 30: more often.
        for (pictures, every, scored) in
            [(30, 6, 4), (60, 6, 9), (20, 4, 4), (16, 3, 5), (15, 3, 4)]
        {
            assert_eq!(probe_score_every(pictures), every, "{pictures} pictures");
            assert_eq!(scored_in_window(pictures, every).len(), scored, "{pictures} pictures");
        }
        assert_eq!(probe_score_every(3), 1);
        assert_eq!(probe_score_every(0), 1);
    }

    #[test]
    fn short_titles_score_fewer_pictures_of_their_windows() {
        let windows = |duration: f64| measure_windows(duration, 2.0);
        let every = |duration: f64| measure_every(duration, &windows(duration));
        let seconds = |duration: f64| {
            let sum: f64 = windows(duration).iter().map(|(s, e)| e - s).sum();
            (sum * 1000.0).round() / 1000.0
        };
        // Two minutes and more: 2 s windows, under a twentieth of the title, every picture.
        assert_eq!((seconds(120.0), every(120.0)), (6.0, 1));
        assert_eq!(every(7200.0), 1);
        // Under that, windows are at most a tenth of the title, every second picture scored.
        assert_eq!((seconds(60.0), every(60.0)), (6.0, 2));
        assert_eq!((seconds(30.0), every(30.0)), (3.0, 2));
        assert_eq!((seconds(10.0), every(10.0)), (1.0, 2));
        // Windows keep a few pictures: a 6 s title's are a quarter second, every third scored.
        assert_eq!((seconds(6.0), every(6.0)), (0.75, 3));
        assert_eq!((seconds(1.0), every(1.0)), (0.25, MEASURE_MAX_EVERY));
        // Every share of a title up to a twentieth scores each picture.
        for windows_secs in [0.5, 1.0, 3.0, 6.0] {
            assert_eq!(
                measure_every(windows_secs / MEASURE_SCORED_SHARE, &[(0.0, windows_secs)]),
                1
            );
        }
        assert_eq!(measure_every(f64::NAN, &[(0.0, 2.0)]), 1);
        assert_eq!(measure_every(0.0, &[]), 1);
    }

    #[test]
    fn a_windows_first_picture_is_scored_only_when_alone() {
        assert_eq!(scored_in_window(7, 3), vec![3, 6]);
        assert_eq!(scored_in_window(5, 1), vec![1, 2, 3, 4]);
        assert_eq!(scored_in_window(3, 4), vec![0]);
        assert_eq!(scored_in_window(1, 1), vec![0]);
        assert!(scored_in_window(0, 2).is_empty());
    }

    fn trial(crf: u8, vmaf: f64) -> Trial {
        Trial { crf, vmaf, bit_rate: 0 }
    }

    #[test]
    fn a_rung_below_its_aim_near_its_cap_is_held_by_it() {
        let spent = |bit_rate| Trial { crf: 23, vmaf: 80.0, bit_rate };
        assert!(held_by_cap(&spent(3_400_000), 3_500_000, 93.0));
        assert!(held_by_cap(&spent(5_000_000), 3_500_000, 93.0));
        // Room left under the cap: a lower setting may buy picture.
        assert!(!held_by_cap(&spent(2_000_000), 3_500_000, 93.0));
        // At its aim: nothing to buy, whatever it spent.
        assert!(!held_by_cap(&Trial { vmaf: 95.0, ..spent(3_400_000) }, 3_500_000, 93.0));
    }

    #[test]
    fn the_setting_reaching_the_target_is_chosen_from_the_trials() {
        let codec = VideoCodec::H264;
        // An easy title: 98 at 23, 95 at 28 → 0.6 per step: 93 is reached at 31.
        assert_eq!(second_trial(codec, 23, 98.0, 93.0), Some(28));
        assert_eq!(choose_crf(codec, &[trial(23, 98.0), trial(28, 95.0)], 93.0), (31, 93.2));
        // A hard one: 88 at 23, 92 at 19 → one per step: 18.
        assert_eq!(second_trial(codec, 23, 88.0, 93.0), Some(18));
        assert_eq!(choose_crf(codec, &[trial(23, 88.0), trial(19, 92.0)], 93.0), (18, 93.0));
        // Just above the target: the second trial three steps away, to measure a slope.
        assert_eq!(second_trial(codec, 23, 95.5, 95.0), Some(26));
        assert_eq!(second_trial(codec, 23, 92.0, 93.0), Some(20));
        // Close enough: no second trial, the first setting kept.
        assert_eq!(second_trial(codec, 23, 93.3, 93.0), None);
        assert_eq!(choose_crf(codec, &[trial(23, 93.3)], 93.0), (23, 93.3));
        // Never beyond the range, whatever the trials say.
        assert_eq!(choose_crf(codec, &[trial(23, 100.0), trial(33, 99.9)], 93.0).0, 33);
        assert_eq!(choose_crf(codec, &[trial(23, 40.0), trial(17, 45.0)], 93.0).0, 17);
        assert_eq!(second_trial(codec, 23, 40.0, 93.0), Some(17));
        // Above the target, a flat or inverted measurement says nothing past the trials (the
        // slides' 360p: 93.8 at 23, 93.6 at 26 — and 94.6 delivered at 28, from 96.4 at 23)…
        let (crf, _) = choose_crf(codec, &[trial(23, 95.0), trial(25, 95.5)], 93.0);
        assert_eq!(crf, 25);
        assert_eq!(choose_crf(codec, &[trial(23, 93.8), trial(26, 93.6)], 93.3).0, 26);
        // …below it, as a sign that bits buy nothing (a cap holds the rung): no lower setting.
        assert_eq!(choose_crf(codec, &[trial(23, 72.2), trial(17, 71.0)], 93.0), (23, 72.2));
        assert_eq!(choose_crf(codec, &[trial(23, 72.2), trial(17, 72.5)], 93.0), (23, 72.2));
        // …or that they buy too little for the bits: 0.2 VMAF a step.
        assert_eq!(choose_crf(codec, &[trial(23, 88.7), trial(19, 89.5)], 93.0), (23, 88.7));
    }
}
