//! Where the output timeline starts and how far each stream got, the encoder's time base, and
//! the timing of a split title's items: each chunk's range on the title's timeline and the
//! delay every item shares so their outputs join without a seam.

use super::*;

pub(crate) fn seconds(ts: i64, time_base: Rational) -> f64 {
    ts as f64 * f64::from(time_base)
}

/// Where the output timeline starts and how far each stream got, from the packets.
pub(crate) struct Timeline {
    /// The video stream's time base and the offset (in it) that makes the timeline start at 0.
    pub(crate) video_tb: Rational,
    pub(crate) video_offset: i64,
    pub(crate) origin_secs: f64,
    /// One frame at the source's rate, for packets and frames that carry no duration.
    pub(crate) nominal_frame_secs: f64,
    /// Ends (last timestamp + duration, seconds from the origin) of the video, the audio and
    /// every packet of any stream.
    pub(crate) video_end: f64,
    pub(crate) audio_end: f64,
    pub(crate) any_end: f64,
    /// Time base of the video encoders: one tick per frame at the output's base rate (as
    /// `ffmpeg` does), so the H.264 timing info tells players the real frame rate.
    pub(crate) encoder_tb: Rational,
    /// Frame-rate reduction: one output frame per `step` seconds.
    pub(crate) step: Option<f64>,
    pub(crate) next_output_secs: f64,
    /// Pictures with a usable timestamp, as shown to the thumbnails and renditions.
    pub(crate) shown: u64,
    /// A chunk's part of the title (seconds from its first frame): pictures outside it are
    /// decoded (the chunk starts at the keyframe before it) but not shown.
    pub(crate) from_secs: f64,
    pub(crate) until_secs: Option<f64>,
}

impl Timeline {
    /// A timeline for `source` at its nominal `fps`, whole (no chunk), no rate reduction.
    pub(crate) fn for_source(source: &Source, fps: f64) -> Timeline {
        Timeline {
            video_tb: source.video_tb,
            video_offset: source.video_offset,
            origin_secs: source.origin_secs,
            nominal_frame_secs: 1.0 / fps.max(1.0),
            video_end: 0.0,
            audio_end: 0.0,
            any_end: 0.0,
            encoder_tb: Rational::new(1, fps.round().max(1.0) as i32),
            step: None,
            next_output_secs: 0.0,
            shown: 0,
            from_secs: 0.0,
            until_secs: None,
        }
    }

    /// Whether a picture at `at` belongs to this pass (always, unless it encodes a chunk).
    pub(crate) fn in_range(&self, at: f64) -> bool {
        let half_frame = self.nominal_frame_secs / 2.0;
        at >= self.from_secs - half_frame && self.until_secs.is_none_or(|u| at < u - half_frame)
    }
}

impl Timeline {
    pub(crate) fn packet(&mut self, packet: &Packet, time_base: Rational, kind: Option<Type>) {
        let Some(pts) = packet.pts() else { return };
        let duration = if packet.duration() > 0 {
            seconds(packet.duration(), time_base)
        } else if kind == Some(Type::Video) {
            self.nominal_frame_secs
        } else {
            0.0
        };
        let end = seconds(pts, time_base) - self.origin_secs + duration;
        match kind {
            Some(Type::Video) => self.video_end = self.video_end.max(end),
            Some(Type::Audio) => self.audio_end = self.audio_end.max(end),
            _ => {}
        }
        self.any_end = self.any_end.max(end);
    }
}

/// The encoders' time base: the inverse of the stream's base rate (`r_frame_rate`, at which
/// every timestamp of a variable-rate stream falls on a tick), or of the average rate when the
/// base rate is missing or implausible (a container time base posing as a rate). A base rate
/// far above the average is a sparse stream, not an implausible one — a screen recording that
/// only emits frames when something changes, a recording with a pause — and is kept up to
/// `max_output_fps`: timed on the average instead, its frames collided on the coarse ticks and
/// most were dropped (69 of 180 kept).
pub(crate) fn encoder_time_base(
    (base, average): (Rational, Rational),
    fps: f64,
    max_output_fps: f64,
) -> Rational {
    let highest = (fps * 2.0 + 1.0).max(max_output_fps).max(1.0);
    let plausible = |rate: Rational| {
        rate.numerator() > 0
            && rate.denominator() > 0
            && f64::from(rate) <= highest
            && f64::from(rate) >= 1.0
    };
    if plausible(base) {
        base.invert()
    } else if plausible(average) {
        average.invert()
    } else {
        Rational::new(1, fps.round().max(1.0) as i32)
    }
}

/// How far past a chunk's end its pass reads: more than any encoder reorders frames.
pub(crate) const REORDER_MARGIN_SECS: f64 = 2.0;

/// How much later than their title timestamps a split title's items write everything. The
/// whole-title encode's muxer moves every stream later by the most any of them starts before
/// zero: the audio's priming ([`audio::priming_secs`]) or the video's decode lead (B-frames
/// make the first decode time precede the first picture). Split items have no common muxer,
/// so each moves its own outputs by the same amount, computed from the same plan, and their
/// timelines join as the whole encode's would be.
pub(crate) fn split_delay_secs(
    job: &EngineJob,
    plan: &EnginePlan,
    encoder_tb: Rational,
) -> Result<f64, EngineError> {
    let priming = match plan.renditions.iter().find_map(|r| r.audio.as_ref()) {
        Some(audio) => audio::priming_secs(audio)?,
        None => 0.0,
    };
    let settings = VideoSettings {
        preset: job.settings.x264_preset.clone(),
        threads: job.settings.threads,
        sampling: Sampling::default(),
    };
    let keyframe_step = plan.keyframe_secs();
    let mut lead: f64 = 0.0;
    for rendition in &plan.renditions {
        // The colour tags do not change how many frames an encoder reorders.
        let tags = super::colour::Tags::bt709();
        // AV1 packets are never reordered (hidden frames are shown from within later
        // packets), and an SVT-AV1 encoder that never got a frame hangs when closed or
        // flushed (`svt_av1_enc_get_packet` waits for ever): not opened for nothing.
        if rendition.video_codec == tcoder::jobs::VideoCodec::Av1 {
            continue;
        }
        let encoder =
            VideoEncoder::open(rendition, encoder_tb, keyframe_step, &settings, tags, None)?;
        lead = lead.max(encoder.decode_lead_secs());
    }
    Ok(priming.max(lead))
}

/// A chunk's plan: the same renditions' video (so every chunk and the whole-title encode make
/// the same pictures), into HLS only, and its share of the thumbnails.
pub(crate) fn chunk_plan(mut plan: EnginePlan, chunk: &Chunk) -> Result<EnginePlan, EngineError> {
    let Some(segment_secs) = plan.hls_segment_secs.filter(|_| plan.mode == Mode::Transcode) else {
        return Err(EngineError::new(
            ErrorCode::Failed,
            "only an HLS transcode is split into chunks",
        ));
    };
    let on_boundary =
        |secs: f64| ((secs / segment_secs) - (secs / segment_secs).round()).abs() < 1e-6;
    if !on_boundary(chunk.start_secs)
        || chunk.end_secs.is_some_and(|end| !on_boundary(end) || end <= chunk.start_secs)
    {
        return Err(EngineError::new(
            ErrorCode::Failed,
            format!("a chunk must span whole {segment_secs} s segments"),
        ));
    }
    plan.mp4 = false;
    for rendition in &mut plan.renditions {
        rendition.audio = None;
    }
    Ok(plan)
}

/// Seeks to the keyframe at or before `secs` (seconds of the source's own timestamps).
pub(crate) fn seek_before(
    input: &mut ffmpeg::format::context::Input,
    secs: f64,
) -> Result<(), EngineError> {
    let target = (secs * f64::from(ffmpeg::ffi::AV_TIME_BASE)).floor() as i64;
    input.seek(target, ..target).map_err(|e| crate::error::input("seek to the chunk", &e))
}
