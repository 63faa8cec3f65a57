//! The EBU R128 meter (libavfilter's `ebur128`) as the loudness normalisation uses it: put in
//! an audio graph, its frames carry the running measurement as metadata, which [`Meter`] reads.

use ffmpeg_next::frame;

use tcoder::engine::LoudnessMeasure;

/// The meter put in a graph: its frames carry the running measurement as metadata.
pub(crate) const METER: &str = "ebur128=metadata=1:peak=true";

/// What `ebur128` reports for audio that never passes its absolute gate (silence).
pub(crate) const SILENCE_LUFS: f64 = -70.0;

/// The latest measurement carried by frames leaving a [`METER`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Meter {
    integrated: Option<f64>,
    range: Option<f64>,
    /// Linear (1.0 = full scale).
    true_peak: Option<f64>,
}

impl Meter {
    /// Takes what `frame`'s metadata says (frames that did not pass the meter, like padding
    /// silence, say nothing and change nothing).
    pub(crate) fn read(&mut self, frame: &frame::Audio) {
        let metadata = frame.metadata();
        let value = |key: &str| metadata.get(key).and_then(|v| v.trim().parse::<f64>().ok());
        if let Some(integrated) = value("lavfi.r128.I") {
            self.integrated = Some(integrated);
        }
        if let Some(range) = value("lavfi.r128.LRA") {
            self.range = Some(range);
        }
        if let Some(peak) = value("lavfi.r128.true_peak") {
            self.true_peak = Some(peak);
        }
    }

    pub(crate) fn measured(&self) -> Option<LoudnessMeasure> {
        Some(LoudnessMeasure {
            integrated_lufs: self.integrated?.max(SILENCE_LUFS),
            range_lu: self.range.unwrap_or(0.0),
            true_peak_dbtp: dbfs(self.true_peak.unwrap_or(0.0)),
        })
    }
}

/// A linear amplitude in decibels, floored where it would be -inf (digital silence).
pub(crate) fn dbfs(linear: f64) -> f64 {
    if linear > 1e-7 { 20.0 * linear.log10() } else { -140.0 }
}
