//! The per-title probe: a few one-second windows of the source, spread over it, encoded at
//! every rung with the job's own encoder settings — first at the codec's fixed setting, then,
//! for each rung not already at its target, at the setting an assumed slope says reaches it —
//! and scored; each rung then gets the setting the two trials say reaches the target (under
//! its cap, as every encode is). A rung barely cheaper than the one above it is dropped: a
//! player gains nothing by switching down to it.

use std::collections::BTreeMap;

use tcoder::engine::plan::constant_rate_factor;
use tcoder::engine::quality::{
    FIXED_MARGIN, QualityScores, RungChoice, Trial, WORTH_SLOPE, cap_bound, choose_crf,
    fmp4_first_sample_bytes, held_by_cap, probe_score_every, probe_windows, second_trial,
    title_rate, vmaf_at,
};
use tcoder::engine::{
    Chunk, DynamicRange, EngineError, EngineJob, ErrorCode, LadderReport, Mode, RenditionPlan, Task,
};
use tcoder::jobs::OutputKind;

use super::Sampling;
use crate::transcode::{Probed, encode_measured};

/// A rung below another is kept only when it needs at most this share of the other's bits:
/// adaptive players step down to save bandwidth, and a step saving less than this is not
/// worth a rendition.
const MIN_STEP_DOWN: f64 = 0.75;

/// The probe's folder in the output folder (removed before the encode writes anything).
const PROBE_DIR: &str = ".probe";

/// How much of a split title its probe samples: its start. Playback of a split title waits
/// for the decision (every chunk, the first included, uses it), and the start is what has
/// arrived first and what one window of probe can sample at once.
pub(crate) const SPLIT_PROBE_SPAN_SECS: f64 = 40.0;

/// Chooses every rung's setting for the job's quality goal from windows spread over the
/// title's first `span_secs`, or `None` when there is nothing to choose: `quality: fixed`, a
/// copy, or renditions that keep HDR (VMAF's model is for SDR pictures).
pub(crate) fn decide(
    job: &EngineJob,
    probed: &Probed,
    span_secs: f64,
) -> Result<Option<LadderReport>, EngineError> {
    let Some(target) = job.spec.quality.target() else { return Ok(None) };
    let plan = &probed.plan;
    if plan.mode != Mode::Transcode
        || plan.renditions.is_empty()
        || plan.renditions.iter().any(|r| r.dynamic_range != DynamicRange::Sdr)
    {
        return Ok(None);
    }
    let cpu_before = cpu_secs();
    let decided = measure(job, probed, target, span_secs.min(probed.media.duration_secs));
    let _ = std::fs::remove_dir_all(job.output_dir.join(PROBE_DIR));
    let cpu = ((cpu_secs() - cpu_before) * 100.0).round() / 100.0;
    let ladder = match decided {
        Ok(mut ladder) => {
            ladder.probe_cpu_secs = cpu;
            ladder
        }
        Err(e) if matches!(e.code, ErrorCode::Canceled | ErrorCode::DiskFull | ErrorCode::Disk) => {
            return Err(e);
        }
        // The title is encoded at the fixed settings rather than not at all: the encode itself
        // judges the source.
        Err(e) => LadderReport {
            goal: job.spec.quality.to_string(),
            target,
            rungs: plan
                .renditions
                .iter()
                .map(|r| RungChoice {
                    name: r.name.clone(),
                    crf: r.crf,
                    expected_vmaf: 0.0,
                    trials: Vec::new(),
                    kept: true,
                    reason: format!(
                        "the probe could not measure the title ({e}): the fixed setting"
                    ),
                })
                .collect(),
            probe_media_secs: 0.0,
            probe_cpu_secs: cpu,
        },
    };
    Ok(Some(ladder))
}

/// A rung after its first trial: what the fixed setting measured, the aim that sets (see
/// `QualityGoal::aim`), and whether the rung is below that aim at close to its cap, which
/// holds it at the fixed setting (no second trial).
struct FirstLook<'a> {
    rendition: &'a RenditionPlan,
    first: Trial,
    aim: f64,
    held: bool,
}

/// The trials and the choice from them (the probe's CPU is filled in by the caller).
fn measure(
    job: &EngineJob,
    probed: &Probed,
    target: f64,
    span_secs: f64,
) -> Result<LadderReport, EngineError> {
    let plan = &probed.plan;
    let windows = probe_windows(span_secs, plan.keyframe_secs());
    let codec = job.spec.video_codec;
    let first_settings: BTreeMap<String, u8> =
        plan.renditions.iter().map(|r| (r.name.clone(), r.crf)).collect();
    let mut first = trial(job, probed, &windows, &first_settings)?;
    let looks = plan
        .renditions
        .iter()
        .map(|rendition| {
            let first = first.remove(&rendition.name).ok_or_else(|| {
                EngineError::new(
                    ErrorCode::Failed,
                    format!("the quality probe scored no picture of {}", rendition.name),
                )
            })?;
            let aim = job.spec.quality.aim(first.vmaf).unwrap_or(target);
            let held = held_by_cap(&first, rendition.video_bit_rate, aim);
            Ok(FirstLook { rendition, first, aim, held })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let second_settings: BTreeMap<String, u8> = looks
        .iter()
        .filter(|look| !look.held)
        .filter_map(|look| {
            let crf = second_trial(codec, look.first.crf, look.first.vmaf, look.aim)?;
            Some((look.rendition.name.clone(), crf))
        })
        .collect();
    let mut second = match second_settings.is_empty() {
        true => BTreeMap::new(),
        false => trial(job, probed, &windows, &second_settings)?,
    };
    let mut rungs: Vec<RungChoice> = Vec::new();
    for FirstLook { rendition, first, aim, held } in looks {
        let mut trials = vec![first];
        trials.extend(second.remove(&rendition.name));
        let (mut crf, mut expected_vmaf) = match held {
            true => (trials[0].crf, trials[0].vmaf),
            false => choose_crf(codec, &trials, aim),
        };
        let capped = match cap_bound(&trials, rendition.video_bit_rate, crf) {
            Some(bounded) if !held => {
                crf = bounded;
                expected_vmaf = vmaf_at(&trials, crf);
                Cap::Reached
            }
            _ if held => Cap::Held,
            _ => Cap::Free,
        };
        rungs.push(RungChoice {
            name: rendition.name.clone(),
            crf,
            expected_vmaf,
            reason: reason(rendition, &trials, (crf, expected_vmaf, capped), (target, aim)),
            trials,
            kept: true,
        });
    }
    drop_close_rungs(&mut rungs);
    let probe_media_secs = windows.iter().map(|(start, end)| end - start).sum();
    Ok(LadderReport {
        goal: job.spec.quality.to_string(),
        target,
        rungs,
        probe_media_secs,
        probe_cpu_secs: 0.0,
    })
}

/// How a rung's cap bore on its choice.
#[derive(Clone, Copy, PartialEq)]
enum Cap {
    /// Its trials stayed clear of it.
    Free,
    /// Below its aim at close to the cap at the fixed setting: nothing lower tried.
    Held,
    /// A lower setting was tried, but one lower than the chosen would spend close to the cap.
    Reached,
}

fn reason(
    rendition: &RenditionPlan,
    trials: &[Trial],
    (crf, expected, capped): (u8, f64, Cap),
    (target, aim): (f64, f64),
) -> String {
    let measured: Vec<String> =
        trials.iter().map(|t| format!("VMAF {:.1} at CRF {}", t.vmaf, t.crf)).collect();
    let fixed = constant_rate_factor(rendition.video_codec);
    let verdict = match () {
        _ if expected + 0.05 >= aim => format!("CRF {crf} is expected to give {expected:.1}"),
        _ if capped == Cap::Held => format!(
            "it spent close to the rung's {} kb/s cap, which holds it: CRF {crf}, no lower \
             setting tried",
            rendition.video_bit_rate / 1000
        ),
        _ if capped == Cap::Reached => format!(
            "a lower setting would spend close to the rung's {} kb/s cap, which holds it: CRF \
             {crf}, expected to give {expected:.1}",
            rendition.video_bit_rate / 1000
        ),
        // Below the aim at the fixed setting, and a lower one bought too little.
        _ if crf >= fixed => format!(
            "a lower setting bought too little for its bits (under {WORTH_SLOPE} VMAF a step): \
             CRF {crf}"
        ),
        _ => format!("CRF {crf}, the best allowed, is expected to give {expected:.1}"),
    };
    let aiming = match aim > target {
        true => format!(
            "target {target}, aiming at {aim:.1} (at most {FIXED_MARGIN} below the fixed setting's)"
        ),
        false => format!("target {target}"),
    };
    let mut text = format!("{}; {aiming}: {verdict}", measured.join(", "));
    if crf != fixed {
        text.push_str(&format!(" (fixed: CRF {fixed})"));
    }
    text
}

/// Bits/s a rung's trials predict at `crf` (log-linear between the trials, or the nearest).
fn predicted_rate(choice: &RungChoice) -> f64 {
    let points: Vec<(f64, f64)> = choice
        .trials
        .iter()
        .filter(|t| t.bit_rate > 0)
        .map(|t| (f64::from(t.crf), (t.bit_rate as f64).ln()))
        .collect();
    let crf = f64::from(choice.crf);
    match points[..] {
        [(c0, r0), (c1, r1), ..] if c0 != c1 => (r0 + (r1 - r0) * (crf - c0) / (c1 - c0)).exp(),
        [(_, r0), ..] => r0.exp(),
        [] => 0.0,
    }
}

/// Drops each rung (never the lowest, never the top) that needs more than
/// [`MIN_STEP_DOWN`] of the bits of the kept rung above it.
fn drop_close_rungs(rungs: &mut [RungChoice]) {
    let rates: Vec<f64> = rungs.iter().map(predicted_rate).collect();
    let mut above: Option<usize> = None;
    let last = rungs.len().saturating_sub(1);
    for k in 0..rungs.len() {
        if let Some(upper) = above
            && k != last
            && rates[upper] > 0.0
            && rates[k] > MIN_STEP_DOWN * rates[upper]
        {
            rungs[k].kept = false;
            rungs[k].reason.push_str(&format!(
                "; dropped: {:.0} kb/s against {:.0} kb/s for {}, a step down saving too little",
                rates[k] / 1000.0,
                rates[upper] / 1000.0,
                rungs[upper].name
            ));
            continue;
        }
        above = Some(k);
    }
}

/// Encodes the probe windows with each named rung at its setting; each rung's trial (mean
/// VMAF over every window's pictures, bits/s over their seconds).
fn trial(
    job: &EngineJob,
    probed: &Probed,
    windows: &[(f64, f64)],
    settings: &BTreeMap<String, u8>,
) -> Result<BTreeMap<String, Trial>, EngineError> {
    let mut scores: QualityScores = BTreeMap::new();
    // Bits each rung spent, at the title's keyframe interval (`title_rate`).
    let mut bits: BTreeMap<String, f64> = BTreeMap::new();
    let mut seconds = 0.0;
    for (n, &(start, end)) in windows.iter().enumerate() {
        let out = job.output_dir.join(PROBE_DIR).join(n.to_string());
        let _ = std::fs::remove_dir_all(&out);
        let window = Chunk {
            start_secs: start,
            end_secs: (end < probed.media.duration_secs).then_some(end),
            first_segment: 0,
            ladder: None,
        };
        let mut spec = job.spec.clone();
        spec.outputs = vec![OutputKind::Hls];
        spec.quality_floor = None;
        let window_job = EngineJob {
            output_dir: out.clone(),
            spec,
            task: Task::Chunk(window),
            sidecars: Vec::new(),
            ladder: None,
            ..job.clone()
        };
        let mut plan = probed.plan.clone();
        plan.mp4 = false;
        plan.thumbnails = None;
        plan.captions.clear();
        plan.audio_renditions.clear();
        // One segment, one keyframe: the window's.
        plan.hls_segment_secs = Some(end - start);
        plan.renditions.retain(|r| settings.contains_key(&r.name));
        for rendition in &mut plan.renditions {
            rendition.crf = settings[&rendition.name];
        }
        let (input, media) = crate::probe::open(&job.input, &job.limits)?;
        let window_probed = Probed { input, media, plan, probe_secs: 0.0 };
        let fps = window_probed.plan.renditions.iter().map(|r| r.fps).fold(0.0, f64::max);
        let every = probe_score_every(((end - start) * fps).round() as usize);
        let sampling = Sampling { windows: vec![(start, end)], every };
        let report = encode_measured(&window_job, window_probed, &sampling, &mut |_| {})?;
        for rendition in &report.renditions {
            let folder = format!("hls/{}/", rendition.name);
            let segments: Vec<_> = report
                .files
                .iter()
                .filter(|f| f.path.starts_with(&folder) && f.path.ends_with(".m4s"))
                .collect();
            let spent: u64 = segments.iter().map(|f| f.bytes).sum();
            // The window's one segment starts on its keyframe.
            let key = segments
                .iter()
                .min_by(|a, b| a.path.cmp(&b.path))
                .and_then(|first| std::fs::read(out.join(&first.path)).ok())
                .and_then(|segment| fmp4_first_sample_bytes(&segment))
                .unwrap_or(0);
            let rate = title_rate(spent, key, end - start, probed.plan.keyframe_secs());
            *bits.entry(rendition.name.clone()).or_default() += rate as f64 * (end - start);
        }
        for (name, frames) in super::read_scores(&out)? {
            scores.entry(name).or_default().extend(frames);
        }
        seconds += end - start;
        let _ = std::fs::remove_dir_all(&out);
    }
    Ok(scores
        .into_iter()
        .filter(|(_, frames)| !frames.is_empty())
        .map(|(name, frames)| {
            let vmaf = frames.iter().sum::<f64>() / frames.len() as f64;
            let bit_rate =
                (bits.get(&name).copied().unwrap_or(0.0) / seconds.max(1e-3)).round() as u64;
            let trial =
                Trial { crf: settings[&name], vmaf: (vmaf * 100.0).round() / 100.0, bit_rate };
            (name, trial)
        })
        .collect())
}

/// CPU seconds this process has used, all its threads (the encoders') included.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage(2) fills the struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(name: &str, bit_rate: u64) -> RungChoice {
        RungChoice {
            name: name.to_owned(),
            crf: 23,
            expected_vmaf: 95.0,
            trials: vec![Trial { crf: 23, vmaf: 95.0, bit_rate }],
            kept: true,
            reason: String::new(),
        }
    }

    #[test]
    fn a_rung_saving_too_little_below_the_kept_one_above_is_dropped() {
        // Slides: 720p needs 0.77 of 1080p's bits, 360p a third of 1080p's, 144p nearly all of
        // 360p's — but the lowest rung always stays, as does the top.
        let mut rungs = [
            rung("1080p", 592_000),
            rung("720p", 454_000),
            rung("360p", 200_000),
            rung("144p", 190_000),
        ];
        drop_close_rungs(&mut rungs);
        let kept: Vec<bool> = rungs.iter().map(|r| r.kept).collect();
        assert_eq!(kept, [true, false, true, true]);
        assert!(rungs[1].reason.contains("against 592 kb/s for 1080p"), "{}", rungs[1].reason);
        // A rung is compared with the kept rung above it, not a dropped one.
        let mut rungs =
            [rung("1080p", 1000), rung("720p", 900), rung("360p", 800), rung("144p", 100)];
        drop_close_rungs(&mut rungs);
        assert_eq!(rungs.iter().map(|r| r.kept).collect::<Vec<_>>(), [true, false, false, true]);
    }
}
