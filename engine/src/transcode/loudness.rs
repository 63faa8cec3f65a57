//! Loudness normalisation (EBU R128; Mux calls it `normalize_audio`): the source's audio is
//! measured in a pass of its own (integrated loudness, loudness range and true peak, by
//! libavfilter's `ebur128`), then every rendition's audio gets one linear gain towards the
//! target, and what is encoded is measured again for the result.
//!
//! One gain for the whole title keeps its dynamics as mixed (a quiet scene stays quieter than
//! a loud one); the gain is cut short of the target where the true peak would pass -1 dBTP,
//! rather than compressing or clipping — `after` in the result says where it landed. The
//! measuring pass reads the file once more and decodes only the audio.

use ffmpeg_next::frame;

use tcoder::engine::{EngineError, EngineJob, LoudnessMeasure, LoudnessReport, MediaInfo};

use super::audio::{SourceAudio, build_graph, graph_input};
use super::decode::{feed, open_audio_decoder};
#[cfg(test)]
use super::meter::dbfs;
use super::meter::{METER, Meter, SILENCE_LUFS};

/// The highest true peak a gain may lead to (EBU R128's limit for distribution).
const MAX_TRUE_PEAK_DBTP: f64 = -1.0;

/// The gain (dB) that brings `source` to `target_lufs` without the true peak passing
/// [`MAX_TRUE_PEAK_DBTP`]; none for silence.
pub(crate) fn gain_db(source: &LoudnessMeasure, target_lufs: f64) -> f64 {
    if source.integrated_lufs <= SILENCE_LUFS {
        return 0.0;
    }
    let wanted = target_lufs - source.integrated_lufs;
    wanted.min(MAX_TRUE_PEAK_DBTP - source.true_peak_dbtp)
}

/// A normalisation decided: the target, the source's measurement and the gain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Normalisation {
    target_lufs: f64,
    before: LoudnessMeasure,
    pub gain_db: f64,
}

impl Normalisation {
    /// The normalisation `job` asks for, measured on the source's audio stream `index`;
    /// `None` when not asked.
    pub(crate) fn of(
        job: &EngineJob,
        media: &MediaInfo,
        index: usize,
    ) -> Result<Option<Normalisation>, EngineError> {
        let Some(target) = job.spec.loudness_target else { return Ok(None) };
        let target_lufs = f64::from(target);
        Ok(measure_source(job, media, index)?.map(|before| Normalisation {
            target_lufs,
            before,
            gain_db: gain_db(&before, target_lufs),
        }))
    }

    /// The report, with what the encoded audio measured.
    pub(crate) fn report(&self, after: Option<LoudnessMeasure>) -> Option<LoudnessReport> {
        Some(LoudnessReport {
            target_lufs: self.target_lufs,
            before: self.before,
            gain_db: self.gain_db,
            after: after?,
        })
    }
}

/// Where an audio item of a split title leaves its loudness report for the stitch (beside
/// its `hls/`, so it is not an output).
pub(crate) const REPORT_FILE: &str = "loudness.json";

/// Measures the source's audio stream `index` in a pass of its own, over a second opening of
/// the file. `None` when the stream gives no measurement.
pub(crate) fn measure_source(
    job: &EngineJob,
    media: &MediaInfo,
    index: usize,
) -> Result<Option<LoudnessMeasure>, EngineError> {
    if !media.audio_tracks.iter().any(|t| t.index == index)
        && media.audio.as_ref().is_none_or(|a| a.index != index)
    {
        return Ok(None);
    }
    let (mut input, _) = crate::probe::open(&job.input, &job.limits)?;
    let stream = input.stream(index).expect("probed stream");
    let time_base = stream.time_base();
    let mut decoder = open_audio_decoder(stream.parameters())?;
    let source = SourceAudio::of(&decoder, time_base);
    let unnamed = source.unnamed_channels();
    let mut graph = build_graph(&source, None, METER)?;
    let mut meter = Meter::default();
    let (mut decoded, mut filtered) = (frame::Audio::empty(), frame::Audio::empty());
    let mut pump = |decoder: &mut ffmpeg_next::decoder::Audio,
                    graph: &mut ffmpeg_next::filter::Graph|
     -> Result<(), EngineError> {
        // Frames a decoder refuses to give are decode errors the encode pass judges.
        while decoder.receive_frame(&mut decoded).is_ok() {
            let frame = graph_input(&decoded, 0, unnamed)?;
            graph
                .get("in")
                .expect("graph has an input")
                .source()
                .add(&frame)
                .map_err(|e| crate::error::output("measure loudness", &e))?;
            while graph.get("out").expect("graph has an output").sink().frame(&mut filtered).is_ok()
            {
                meter.read(&filtered);
            }
        }
        Ok(())
    };
    for (stream, packet) in input.packets() {
        if stream.index() == index {
            feed(&mut decoder, Some(&packet));
            pump(&mut decoder, &mut graph)?;
        }
    }
    feed(&mut decoder, None);
    pump(&mut decoder, &mut graph)?;
    graph
        .get("in")
        .expect("graph has an input")
        .source()
        .flush()
        .map_err(|e| crate::error::output("measure loudness", &e))?;
    while graph.get("out").expect("graph has an output").sink().frame(&mut filtered).is_ok() {
        meter.read(&filtered);
    }
    Ok(meter.measured())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(integrated_lufs: f64, true_peak_dbtp: f64) -> LoudnessMeasure {
        LoudnessMeasure { integrated_lufs, range_lu: 5.0, true_peak_dbtp }
    }

    #[test]
    fn the_gain_reaches_the_target_unless_the_peak_would_pass_minus_one() {
        assert!((gain_db(&measure(-30.0, -12.0), -23.0) - 7.0).abs() < 1e-9);
        assert!((gain_db(&measure(-14.0, -1.0), -23.0) + 9.0).abs() < 1e-9);
        // +10 dB wanted, but the peak is at -4 dBTP: 3 dB is all it gets.
        assert!((gain_db(&measure(-26.0, -4.0), -16.0) - 3.0).abs() < 1e-9);
        assert_eq!(gain_db(&measure(-70.0, -140.0), -23.0), 0.0);
        assert_eq!(dbfs(0.0), -140.0);
        assert!((dbfs(0.5) + 6.0206).abs() < 1e-3);
    }
}
