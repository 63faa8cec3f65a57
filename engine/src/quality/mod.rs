//! The engine measuring its own outputs (docs/MEDIA.md, "Quality"): VMAF of sampled windows
//! of every rendition ([`meter`]), and the per-title probe that chooses each rung's quality
//! setting from trial encodes of a few seconds of the source ([`probe`]).

pub(crate) mod meter;
pub(crate) mod probe;
pub(crate) mod vmaf;

use std::path::Path;

use tcoder::engine::quality::SCORES_FILE;
use tcoder::engine::{
    EngineError, EngineReport, EngineSpec, ErrorCode, FloorAction, QualityReport, QualityScores,
};

/// Where and how an encode's renditions are scored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sampling {
    /// `[start, end)` seconds on the title's timeline, each starting on a keyframe.
    pub windows: Vec<(f64, f64)>,
    /// Every this many pictures of a window are scored (VMAF's motion feature still sees
    /// each): the probe's trials need a mean, not every picture's score, and a short title's
    /// windows are most of it (`measure_every`).
    pub every: u32,
}

/// The job's quality floor against the renditions measured: a rendition below it fails the
/// job (`engine.quality_below_floor`) or adds a warning, as the floor says.
pub(crate) fn check_floor(spec: &EngineSpec, report: &mut EngineReport) -> Result<(), EngineError> {
    let Some(floor) = spec.quality_floor else { return Ok(()) };
    let measured: Vec<_> =
        report.renditions.iter().map(|r| (r.name.clone(), r.quality.clone())).collect();
    let Some(miss) = floor.misses(&measured) else { return Ok(()) };
    match floor.action {
        FloorAction::Fail => Err(EngineError::new(ErrorCode::QualityBelowFloor, miss)),
        FloorAction::Warn => {
            report.media.warnings.push(miss);
            Ok(())
        }
    }
}

/// The per-frame scores a part wrote in its output folder `out` (none: empty).
pub(crate) fn read_scores(out: &Path) -> Result<QualityScores, EngineError> {
    let path = out.join(SCORES_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::new(ErrorCode::Failed, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(QualityScores::new()),
        Err(e) => Err(EngineError::new(ErrorCode::Failed, format!("{}: {e}", path.display()))),
    }
}

/// A split title's renditions' quality: the scores of every chunk (`dirs`) pooled.
pub(crate) fn pool(
    dirs: &[std::path::PathBuf],
    report: &mut EngineReport,
) -> Result<(), EngineError> {
    let mut pooled = QualityScores::new();
    for dir in dirs {
        for (name, frames) in read_scores(dir)? {
            pooled.entry(name).or_default().extend(frames);
        }
    }
    for rendition in &mut report.renditions {
        rendition.quality = pooled.get(&rendition.name).and_then(|s| QualityReport::of(s));
    }
    Ok(())
}
