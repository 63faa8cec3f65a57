//! The pipeline: probe → plan → one pass over the input: every video packet is decoded once,
//! and each decoded frame feeds every rendition (scale → encode → mux into MP4 and/or HLS)
//! and the thumbnails; audio is decoded once and resampled/encoded per rendition. Then the
//! HLS master playlist is written and every output is probed before it counts.

mod audio;
pub(crate) mod hls;
mod normalize;
pub(crate) mod output;
pub(crate) mod thumbs;
pub(crate) mod title_audio;
pub(crate) mod validate;
mod video;

use std::path::Path;
use std::time::Instant;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::media::Type;
use ffmpeg_next::{Dictionary, Packet, Rational, codec, frame};

use self::audio::{AudioEncoder, SourceAudio};
use self::normalize::{Normalizer, SourcePictures};
use self::output::{Muxer, Track};
use self::thumbs::Thumbnails;
use self::video::{VideoEncoder, VideoSettings};
use tcoder::engine::limits::{Limits, codec_whitelist};
use tcoder::engine::{
    Chunk, EngineError, EngineJob, EnginePlan, EngineReport, ErrorCode, MediaInfo, Mode,
    OutputFile, Progress, RenditionPlan, RenditionReport, Task, plan,
};
use tcoder::jobs::{AudioCodec, VideoCodec};

use crate::probe;

/// Calls `on_progress` at most once per second.
struct ProgressMeter<'a> {
    started: Instant,
    last: Option<Instant>,
    duration: f64,
    frames: u64,
    on_progress: &'a mut dyn FnMut(&Progress),
}

impl ProgressMeter<'_> {
    fn frame(&mut self, media_secs: f64) {
        self.frames += 1;
        if self.last.is_some_and(|l| l.elapsed().as_secs_f64() < 1.0) {
            return;
        }
        self.last = Some(Instant::now());
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-6);
        let speed = media_secs.max(0.0) / elapsed;
        let progress = Progress {
            frames: self.frames,
            percent: (media_secs / self.duration * 100.0).clamp(0.0, 100.0),
            fps: self.frames as f64 / elapsed,
            speed,
            eta_secs: (speed > 0.0).then(|| ((self.duration - media_secs).max(0.0)) / speed),
            parts: None,
        };
        (self.on_progress)(&progress);
    }
}

/// One rendition being produced.
struct Rendition {
    plan: RenditionPlan,
    video: Option<VideoEncoder>,
    audio: Option<AudioEncoder>,
    muxers: Vec<Muxer>,
}

impl Rendition {
    fn drain_video(&mut self) -> Result<(), EngineError> {
        if let Some(video) = &mut self.video {
            while let Some(packet) = video.receive() {
                for muxer in &mut self.muxers {
                    muxer.write(Track::Video, &packet, video.time_base)?;
                }
            }
        }
        Ok(())
    }

    /// End of input: flushes the encoders (audio cut or padded to `video_secs`) and closes
    /// the muxers.
    fn close(&mut self, video_secs: f64) -> Result<(), EngineError> {
        if let Some(video) = &mut self.video {
            video.send_eof()?;
        }
        self.drain_video()?;
        if let Some(audio) = &mut self.audio {
            audio.finish(video_secs)?;
        }
        self.drain_audio()?;
        for muxer in &mut self.muxers {
            muxer.finish()?;
        }
        Ok(())
    }

    fn drain_audio(&mut self) -> Result<(), EngineError> {
        if let Some(audio) = &mut self.audio {
            while let Some(packet) = audio.receive() {
                for muxer in &mut self.muxers {
                    muxer.write(Track::Audio, &packet, audio.time_base)?;
                }
            }
        }
        Ok(())
    }
}

fn io_error(e: std::io::Error) -> EngineError {
    let code = match e.raw_os_error() {
        Some(libc_enospc)
            if libc_enospc == ffmpeg::util::error::ENOSPC
                || libc_enospc == ffmpeg::util::error::EFBIG =>
        {
            ErrorCode::Disk
        }
        _ => ErrorCode::Failed,
    };
    EngineError::new(code, e.to_string())
}

fn seconds(ts: i64, time_base: Rational) -> f64 {
    ts as f64 * f64::from(time_base)
}

/// Runs one job to completion.
pub fn run(
    job: &EngineJob,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<EngineReport, EngineError> {
    run_with(job, &mut |_| {}, on_progress)
}

/// Where the output timeline starts and how far each stream got, from the packets.
struct Timeline {
    /// The video stream's time base and the offset (in it) that makes the timeline start at 0.
    video_tb: Rational,
    video_offset: i64,
    origin_secs: f64,
    /// One frame at the source's rate, for packets and frames that carry no duration.
    nominal_frame_secs: f64,
    /// Ends (last timestamp + duration, seconds from the origin) of the video, the audio and
    /// every packet of any stream.
    video_end: f64,
    audio_end: f64,
    any_end: f64,
    /// Time base of the video encoders: one tick per frame at the output's base rate (as
    /// `ffmpeg` does), so the H.264 timing info tells players the real frame rate.
    encoder_tb: Rational,
    /// Frame-rate reduction: one output frame per `step` seconds.
    step: Option<f64>,
    next_output_secs: f64,
    /// Pictures with a usable timestamp, as shown to the thumbnails and renditions.
    shown: u64,
    /// A chunk's part of the title (seconds from its first frame): pictures outside it are
    /// decoded (the chunk starts at the keyframe before it) but not shown.
    from_secs: f64,
    until_secs: Option<f64>,
}

impl Timeline {
    /// A timeline for `source` at its nominal `fps`, whole (no chunk), no rate reduction.
    fn for_source(source: &Source, fps: f64) -> Timeline {
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
    fn in_range(&self, at: f64) -> bool {
        let half_frame = self.nominal_frame_secs / 2.0;
        at >= self.from_secs - half_frame && self.until_secs.is_none_or(|u| at < u - half_frame)
    }
}

impl Timeline {
    fn packet(&mut self, packet: &Packet, time_base: Rational, kind: Option<Type>) {
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
/// base rate is missing or implausible (a container time base posing as a rate).
fn encoder_time_base((base, average): (Rational, Rational), fps: f64) -> Rational {
    let plausible = |rate: Rational| {
        rate.numerator() > 0
            && rate.denominator() > 0
            && f64::from(rate) <= (fps * 2.0 + 1.0).max(1.0)
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

/// A picture ready to be shown (deinterlaced, upright) goes to the thumbnails and every
/// rendition; audio is released up to it.
fn show(
    frame: &frame::Video,
    timeline: &mut Timeline,
    renditions: &mut [Rendition],
    thumbnails: &mut Option<Thumbnails>,
    meter: &mut ProgressMeter<'_>,
) -> Result<(), EngineError> {
    let Some(timestamp) = frame.timestamp() else { return Ok(()) };
    let pts = timestamp - timeline.video_offset;
    let at = seconds(pts, timeline.video_tb);
    if !timeline.in_range(at) {
        return Ok(());
    }
    timeline.shown += 1;
    meter.frame(at - timeline.from_secs);
    if let Some(thumbnails) = thumbnails {
        thumbnails.offer(frame, at)?;
    }
    if let Some(step) = timeline.step {
        if at + 1e-4 < timeline.next_output_secs {
            return Ok(());
        }
        timeline.next_output_secs = at.max(timeline.next_output_secs) + step;
    }
    let encoder_pts = (at.max(0.0) / f64::from(timeline.encoder_tb)).round() as i64;
    for rendition in renditions.iter_mut() {
        if let Some(video) = &mut rendition.video {
            video.send(frame, encoder_pts)?;
        }
        rendition.drain_video()?;
        if let Some(audio) = &mut rendition.audio {
            audio.release(at)?;
        }
        rendition.drain_audio()?;
    }
    Ok(())
}

/// As [`run`], telling `on_probed` what the source is once it passed the probe.
pub fn run_with(
    job: &EngineJob,
    on_probed: &mut dyn FnMut(&MediaInfo),
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<EngineReport, EngineError> {
    // Phase 1: probe and plan.
    let probe_started = Instant::now();
    let (mut input, media) = probe::open(&job.input, &job.limits)?;
    let probe_secs = probe_started.elapsed().as_secs_f64();
    on_probed(&media);
    let mut plan = plan(&job.spec, &media, job.settings.segment_secs, job.limits.max_output_fps);
    match &job.task {
        Task::Probe => {
            return Ok(EngineReport { probe_secs, ..planned_report(&media, &plan) });
        }
        Task::Stitch(parts) => {
            let mut report = crate::stitch::run(job, planned_report(&media, &plan), &plan, parts)?;
            report.probe_secs = probe_secs;
            return Ok(report);
        }
        Task::Whole | Task::Chunk(_) | Task::Audio => {}
    }
    let chunk = job.task.chunk();
    // The plan of the whole title: a split title's items all time their outputs by it.
    let title_plan = plan.clone();
    if let Some(chunk) = chunk {
        plan = chunk_plan(plan, chunk)?;
    }
    std::fs::create_dir_all(&job.output_dir).map_err(io_error)?;
    let source = Source::read(&input, &media, plan.mode);
    let max_output_fps = job.limits.max_output_fps.max(1.0);
    let step = (media.video.fps > max_output_fps + 0.01).then(|| 1.0 / max_output_fps);
    let encoder_tb = match step {
        Some(_) => Rational::new(1, max_output_fps.round() as i32),
        None => encoder_time_base(source.video_rates, media.video.fps),
    };
    let delay_secs = match job.task.is_part() {
        true => split_delay_secs(job, &title_plan, encoder_tb)?,
        false => 0.0,
    };
    if job.task == Task::Audio {
        let mut report = title_audio::run(job, &mut input, &media, &plan, &source, delay_secs)?;
        report.probe_secs = probe_secs;
        return Ok(report);
    }
    let (from_secs, until_secs) = chunk.map_or((0.0, None), |c| (c.start_secs, c.end_secs));
    if from_secs > 0.0 {
        seek_before(&mut input, source.origin_secs + from_secs)?;
    }

    // Phase 2: decoders, and every rendition's encoders and muxers.
    let needs_video_decode = plan.mode == Mode::Transcode || plan.thumbnails.is_some();
    let video_decoder = if needs_video_decode {
        Some(open_video_decoder(source.video_params.clone(), &job.limits)?)
    } else {
        None
    };
    let audio_decoder = match (&source.audio, plan.mode) {
        (Some(audio), Mode::Transcode) if chunk.is_none() => {
            Some(open_audio_decoder(audio.params.clone())?)
        }
        _ => None,
    };
    let mut renditions = open_renditions(job, &plan, &source, encoder_tb, audio_decoder.as_ref())?;
    for muxer in renditions.iter_mut().flat_map(|r| r.muxers.iter_mut()) {
        muxer.delay_by(delay_secs);
    }
    let meter_secs = until_secs.unwrap_or(media.duration_secs) - from_secs;

    // Phase 3: one pass over the input.
    let mut pass = Pass {
        renditions,
        thumbnails: plan
            .thumbnails
            .as_ref()
            .map(|thumbs| Thumbnails::for_range(thumbs, from_secs, until_secs)),
        meter: ProgressMeter {
            started: Instant::now(),
            last: None,
            duration: meter_secs.max(1e-3),
            frames: 0,
            on_progress,
        },
        timeline: Timeline {
            encoder_tb,
            step,
            from_secs,
            until_secs,
            ..Timeline::for_source(&source, media.video.fps)
        },
        normalizer: Normalizer::new(SourcePictures {
            orientation: media.video.orientation,
            interlaced: media.video.interlaced,
            top_field_first: source.top_field_first,
            time_base: source.video_tb,
        }),
        video_decoder,
        audio_decoder,
        copy: plan.mode == Mode::Copy,
        packets: 0,
        decode_errors: 0,
        read_until: until_secs.map(|until| until + REORDER_MARGIN_SECS),
    };
    pass.run(&mut input, &source)?;

    // Phase 4: was the input whole? Then close every output and check it.
    let allowed_errors = (pass.packets as f64 * job.limits.max_error_rate).floor() as u64;
    if pass.decode_errors > allowed_errors {
        return Err(EngineError::new(
            ErrorCode::Corrupt,
            format!(
                "{} decode errors in {} video packets (at most {allowed_errors} tolerated)",
                pass.decode_errors, pass.packets
            ),
        ));
    }
    if chunk.is_none() {
        // A chunk reads only its part: the whole title is checked by the audio item's pass.
        check_complete(&media, &pass.timeline)?;
    }
    if needs_video_decode && pass.timeline.shown == 0 {
        return Err(EngineError::new(
            ErrorCode::Corrupt,
            "no video frame could be decoded with a usable timestamp",
        ));
    }
    let video_secs = pass.timeline.video_end;
    for rendition in &mut pass.renditions {
        rendition.close(video_secs)?;
    }
    // A transcode lasts as long as the video; a copy as long as what it copied; a chunk as
    // its part of the video.
    let output_secs = match plan.mode {
        Mode::Transcode => video_secs.min(until_secs.unwrap_or(f64::INFINITY)) - from_secs,
        Mode::Copy => video_secs.max(pass.timeline.audio_end),
    };
    let deinterlaced = pass.normalizer.deinterlaces();
    let (frames, decode_errors) = (pass.meter.frames, pass.decode_errors);
    let mut report = finish(
        job,
        &media,
        &plan,
        pass.renditions,
        pass.thumbnails,
        frames,
        decode_errors,
        output_secs,
    )?;
    report.probe_secs = probe_secs;
    report.deinterlaced = deinterlaced;
    Ok(report)
}

/// What `plan` would make of `media`: the renditions and where their files go, no file yet
/// (the report of a probe, and the frame of a stitch's).
fn planned_report(media: &MediaInfo, plan: &EnginePlan) -> EngineReport {
    let renditions = plan
        .renditions
        .iter()
        .map(|r| RenditionReport {
            name: r.name.clone(),
            width: r.width,
            height: r.height,
            video_codec: r.video_codec,
            audio_codec: r.audio.as_ref().filter(|_| media.audio.is_some()).map(|a| a.codec),
            video_bit_rate: r.video_bit_rate,
            mp4: plan.mp4.then(|| format!("mp4/{}.mp4", r.name)),
            hls: plan.hls_segment_secs.map(|_| format!("hls/{}/index.m3u8", r.name)),
        })
        .collect();
    EngineReport {
        media: media.clone(),
        mode: plan.mode,
        renditions,
        hls_master: None,
        thumbnails: None,
        files: Vec::new(),
        frames: 0,
        decode_errors: 0,
        probe_secs: 0.0,
        deinterlaced: false,
    }
}

/// Where a chunk writes its share of the thumbnails, under its output directory.
pub(crate) const THUMBNAIL_PARTS_DIR: &str = "thumbs/part";

/// How far past a chunk's end its pass reads: more than any encoder reorders frames.
const REORDER_MARGIN_SECS: f64 = 2.0;

/// How much later than their title timestamps a split title's items write everything. The
/// whole-title encode's muxer moves every stream later by the most any of them starts before
/// zero: the audio's priming ([`audio::priming_secs`]) or the video's decode lead (B-frames
/// make the first decode time precede the first picture). Split items have no common muxer,
/// so each moves its own outputs by the same amount, computed from the same plan, and their
/// timelines join as the whole encode's would be.
fn split_delay_secs(
    job: &EngineJob,
    plan: &EnginePlan,
    encoder_tb: Rational,
) -> Result<f64, EngineError> {
    let priming = match plan.renditions.iter().find_map(|r| r.audio.as_ref()) {
        Some(audio) => audio::priming_secs(audio)?,
        None => 0.0,
    };
    let settings =
        VideoSettings { preset: job.settings.x264_preset.clone(), threads: job.settings.threads };
    let keyframe_step = plan.hls_segment_secs.unwrap_or(2.0);
    let mut lead: f64 = 0.0;
    for rendition in &plan.renditions {
        let encoder = VideoEncoder::open(rendition, encoder_tb, keyframe_step, &settings)?;
        lead = lead.max(encoder.decode_lead_secs());
    }
    Ok(priming.max(lead))
}

/// A chunk's plan: the same renditions' video (so every chunk and the whole-title encode make
/// the same pictures), into HLS only, and its share of the thumbnails.
fn chunk_plan(mut plan: EnginePlan, chunk: &Chunk) -> Result<EnginePlan, EngineError> {
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
fn seek_before(input: &mut ffmpeg::format::context::Input, secs: f64) -> Result<(), EngineError> {
    let target = (secs * f64::from(ffmpeg::ffi::AV_TIME_BASE)).floor() as i64;
    input.seek(target, ..target).map_err(|e| crate::error::input("seek to the chunk", &e))
}

/// The source's streams as the pass needs them.
struct Source {
    video_index: usize,
    video_tb: Rational,
    video_params: codec::Parameters,
    video_rates: (Rational, Rational),
    top_field_first: Option<bool>,
    display_matrix: Option<Vec<u8>>,
    audio: Option<SourceStream>,
    /// Where the output timeline starts (seconds of the source), and that in the video's
    /// time base.
    origin_secs: f64,
    video_offset: i64,
    /// Kind and time base of every stream (for the timeline).
    kinds: Vec<Type>,
    bases: Vec<Rational>,
}

struct SourceStream {
    index: usize,
    time_base: Rational,
    params: codec::Parameters,
}

impl Source {
    fn read(input: &ffmpeg::format::context::Input, media: &MediaInfo, mode: Mode) -> Source {
        let stream = input.stream(media.video.index).expect("probed stream");
        // SAFETY: a plain field of the stream's codec parameters.
        let field_order = unsafe { (*stream.parameters().as_ptr()).field_order };
        let display_matrix = stream
            .side_data()
            .find(|d| d.kind() == codec::packet::side_data::Type::DisplayMatrix)
            .map(|d| d.data().to_vec());
        let video_tb = stream.time_base();
        let known = |start: i64, tb: Rational| {
            (start != ffmpeg::ffi::AV_NOPTS_VALUE).then(|| seconds(start, tb))
        };
        let video_start = known(stream.start_time(), video_tb);
        let audio = media.audio.as_ref().map(|a| {
            let audio = input.stream(a.index).expect("probed stream");
            (
                SourceStream {
                    index: a.index,
                    time_base: audio.time_base(),
                    params: audio.parameters(),
                },
                known(audio.start_time(), audio.time_base()),
            )
        });
        let audio_start = audio.as_ref().and_then(|(_, start)| *start);
        // A transcode's timeline starts at the first video frame (audio before it is dropped,
        // audio starting later is preceded by silence); a stream copy keeps both streams whole.
        let origin_secs = match (mode, video_start, audio_start) {
            (Mode::Transcode, Some(video), _) => video,
            (_, Some(video), Some(audio)) => video.min(audio),
            (_, video, audio) => video.or(audio).unwrap_or(0.0),
        };
        use ffmpeg::ffi::AVFieldOrder::{AV_FIELD_BB, AV_FIELD_BT, AV_FIELD_TB, AV_FIELD_TT};
        Source {
            video_index: media.video.index,
            video_tb,
            video_params: stream.parameters(),
            video_rates: (stream.rate(), stream.avg_frame_rate()),
            top_field_first: match field_order {
                AV_FIELD_TT | AV_FIELD_TB => Some(true),
                AV_FIELD_BB | AV_FIELD_BT => Some(false),
                _ => None,
            },
            display_matrix,
            audio: audio.map(|(stream, _)| stream),
            origin_secs,
            video_offset: (origin_secs / f64::from(video_tb)).round() as i64,
            kinds: input.streams().map(|s| s.parameters().medium()).collect(),
            bases: input.streams().map(|s| s.time_base()).collect(),
        }
    }

    /// `origin_secs` in `time_base`.
    fn offset_in(&self, time_base: Rational) -> i64 {
        (self.origin_secs / f64::from(time_base)).round() as i64
    }
}

/// Every rendition's muxers (MP4 and/or HLS) with its encoders (or copied streams), headers
/// written.
fn open_renditions(
    job: &EngineJob,
    plan: &EnginePlan,
    source: &Source,
    encoder_tb: Rational,
    audio_decoder: Option<&ffmpeg::decoder::Audio>,
) -> Result<Vec<Rendition>, EngineError> {
    let out = &job.output_dir;
    let keyframe_step = plan.hls_segment_secs.unwrap_or(2.0);
    let settings =
        VideoSettings { preset: job.settings.x264_preset.clone(), threads: job.settings.threads };
    let mut renditions = Vec::with_capacity(plan.renditions.len());
    for rendition_plan in &plan.renditions {
        let mut muxers = Vec::new();
        if plan.mp4 {
            std::fs::create_dir_all(out.join("mp4")).map_err(io_error)?;
            muxers.push(Muxer::create(
                &out.join(format!("mp4/{}.mp4", rendition_plan.name)),
                "mp4",
                output::mp4_options(),
            )?);
        }
        if let Some(segment_secs) = plan.hls_segment_secs {
            let dir = out.join("hls").join(&rendition_plan.name);
            std::fs::create_dir_all(&dir).map_err(io_error)?;
            let first_segment = job.task.chunk().map(|c| c.first_segment);
            muxers.push(Muxer::create(
                &dir.join("index.m3u8"),
                "hls",
                output::hls_options(&dir, segment_secs, first_segment),
            )?);
        }
        let (video, audio) = match plan.mode {
            Mode::Copy => {
                for muxer in &mut muxers {
                    muxer.add_copied_stream(
                        Track::Video,
                        source.video_params.clone(),
                        source.video_tb,
                        source.display_matrix.as_deref(),
                    )?;
                    if let Some(audio) = &source.audio {
                        muxer.add_copied_stream(
                            Track::Audio,
                            audio.params.clone(),
                            audio.time_base,
                            None,
                        )?;
                    }
                }
                (None, None)
            }
            Mode::Transcode => {
                let video =
                    VideoEncoder::open(rendition_plan, encoder_tb, keyframe_step, &settings)?;
                let audio = match (&rendition_plan.audio, audio_decoder, &source.audio) {
                    (Some(audio_plan), Some(decoder), Some(stream)) => {
                        let decoded = SourceAudio {
                            time_base: stream.time_base,
                            sample_rate: decoder.rate(),
                            format: decoder.format(),
                            layout: decoder.channel_layout(),
                        };
                        let offset = source.offset_in(stream.time_base);
                        Some(AudioEncoder::open(audio_plan, &decoded, offset)?)
                    }
                    _ => None,
                };
                for muxer in &mut muxers {
                    muxer.add_stream(
                        Track::Video,
                        video.context(),
                        video::codec_tag(rendition_plan.video_codec),
                    )?;
                    if let Some(audio) = &audio {
                        muxer.add_stream(Track::Audio, audio.context(), None)?;
                    }
                }
                (Some(video), audio)
            }
        };
        for muxer in &mut muxers {
            muxer.write_header()?;
        }
        renditions.push(Rendition { plan: rendition_plan.clone(), video, audio, muxers });
    }
    Ok(renditions)
}

/// The one pass over the input: its state and what it found.
struct Pass<'a> {
    renditions: Vec<Rendition>,
    thumbnails: Option<Thumbnails>,
    meter: ProgressMeter<'a>,
    timeline: Timeline,
    normalizer: Normalizer,
    video_decoder: Option<ffmpeg::decoder::Video>,
    audio_decoder: Option<ffmpeg::decoder::Audio>,
    /// Stream copy: packets go to the muxers as they are.
    copy: bool,
    /// Video packets read, and decode errors (video and audio).
    packets: u64,
    decode_errors: u64,
    /// A chunk stops reading once video packets are decoded this far past its end (seconds of
    /// the title): later pictures cannot reorder into it.
    read_until: Option<f64>,
}

impl Pass<'_> {
    /// Reads every packet once: copied, or decoded and shown to every rendition; then flushes
    /// the decoders (and the deinterlacer).
    fn run(
        &mut self,
        input: &mut ffmpeg::format::context::Input,
        source: &Source,
    ) -> Result<(), EngineError> {
        let mut decoded = frame::Video::empty();
        let mut decoded_audio = frame::Audio::empty();
        let audio_index = source.audio.as_ref().map(|a| a.index);
        for (stream, packet) in input.packets() {
            let index = stream.index();
            self.timeline.packet(&packet, source.bases[index], source.kinds.get(index).copied());
            if index == source.video_index {
                let decoded_at = packet
                    .dts()
                    .or(packet.pts())
                    .map(|t| seconds(t - source.video_offset, source.video_tb));
                if let (Some(limit), Some(at)) = (self.read_until, decoded_at)
                    && at > limit
                {
                    break;
                }
                self.packets += 1;
                if self.copy {
                    self.copy_packet(&packet, Track::Video, source.video_tb, source.video_offset)?;
                    let at = packet
                        .pts()
                        .map_or(0.0, |p| seconds(p - source.video_offset, source.video_tb));
                    self.meter.frame(at);
                }
                self.decode_video(Some(&packet), &mut decoded)?;
            } else if Some(index) == audio_index {
                let tb = stream.time_base();
                if self.copy {
                    self.copy_packet(&packet, Track::Audio, tb, source.offset_in(tb))?;
                } else {
                    self.decode_audio(Some(&packet), &mut decoded_audio)?;
                }
            }
        }
        self.decode_video(None, &mut decoded)?;
        self.decode_audio(None, &mut decoded_audio)
    }

    /// Writes `packet` shifted by `offset` to every muxer.
    fn copy_packet(
        &mut self,
        packet: &Packet,
        track: Track,
        time_base: Rational,
        offset: i64,
    ) -> Result<(), EngineError> {
        let mut shifted = packet.clone();
        shifted.set_pts(packet.pts().map(|p| p - offset));
        shifted.set_dts(packet.dts().map(|d| d - offset));
        for rendition in &mut self.renditions {
            for muxer in &mut rendition.muxers {
                muxer.write(track, &shifted, time_base)?;
            }
        }
        Ok(())
    }

    /// Decodes `packet` (`None`: end of stream, flush) and shows every picture.
    fn decode_video(
        &mut self,
        packet: Option<&Packet>,
        decoded: &mut frame::Video,
    ) -> Result<(), EngineError> {
        let Some(decoder) = &mut self.video_decoder else { return Ok(()) };
        if !feed(decoder, packet) {
            self.decode_errors += 1;
            return Ok(());
        }
        let (normalizer, timeline, renditions, thumbnails, meter) = (
            &mut self.normalizer,
            &mut self.timeline,
            &mut self.renditions,
            &mut self.thumbnails,
            &mut self.meter,
        );
        let mut on_shown =
            |shown: &frame::Video| show(shown, timeline, renditions, thumbnails, meter);
        self.decode_errors +=
            receive_video(decoder, decoded, |frame| normalizer.push(frame, &mut on_shown))?;
        if packet.is_none() {
            normalizer.flush(&mut on_shown)?;
        }
        Ok(())
    }

    /// Decodes `packet` (`None`: flush) and feeds every rendition's audio.
    fn decode_audio(
        &mut self,
        packet: Option<&Packet>,
        decoded: &mut frame::Audio,
    ) -> Result<(), EngineError> {
        let Some(decoder) = &mut self.audio_decoder else { return Ok(()) };
        if !feed(decoder, packet) {
            self.decode_errors += 1;
            return Ok(());
        }
        self.decode_errors += receive_audio(decoder, decoded, &mut self.renditions)?;
        Ok(())
    }
}

/// Sends `packet` to `decoder` (`None`: end of stream); `false` when the decoder refused the
/// packet (a decode error; the end of stream is never one).
fn feed(decoder: &mut ffmpeg::decoder::Opened, packet: Option<&Packet>) -> bool {
    match packet {
        Some(packet) => decoder.send_packet(packet).is_ok(),
        None => {
            let _ = decoder.send_eof();
            true
        }
    }
}

/// A source whose streams end well before their header says was cut off (a truncated
/// upload): refused rather than turned into a shorter video. The video's own declared
/// duration is the measure when there is one; otherwise the container's, against every
/// stream (subtitles included).
fn check_complete(media: &MediaInfo, timeline: &Timeline) -> Result<(), EngineError> {
    let (declared, reached) = if media.video_duration_declared {
        (media.duration_secs, timeline.video_end)
    } else {
        (media.container_duration_secs, timeline.any_end)
    };
    let tolerance = (declared * 0.02).max(0.25);
    if reached + tolerance < declared {
        return Err(EngineError::new(
            ErrorCode::Corrupt,
            format!(
                "the input holds {reached:.2} s of the {declared:.2} s it declares (truncated or corrupt)"
            ),
        ));
    }
    if timeline.video_end <= 0.0 {
        return Err(EngineError::new(ErrorCode::Corrupt, "no video frame could be read"));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn finish(
    job: &EngineJob,
    media: &MediaInfo,
    plan: &EnginePlan,
    renditions: Vec<Rendition>,
    thumbnails: Option<Thumbnails>,
    frames: u64,
    decode_errors: u64,
    output_secs: f64,
) -> Result<EngineReport, EngineError> {
    let out = &job.output_dir;
    let mut reports = Vec::new();
    let mut variants = Vec::new();
    for rendition in &renditions {
        let audio = rendition.audio.is_some() || (plan.mode == Mode::Copy && media.audio.is_some());
        let mp4 = plan.mp4.then(|| format!("mp4/{}.mp4", rendition.plan.name));
        let hls = plan.hls_segment_secs.map(|_| format!("hls/{}/index.m3u8", rendition.plan.name));
        let expected = validate::Expected {
            rendition: &rendition.plan,
            duration: output_secs,
            audio,
            check_dimensions: plan.mode == Mode::Transcode,
        };
        for path in mp4.iter().chain(hls.iter()) {
            validate::check(out, path, &expected)?;
        }
        if let Some(video) = &rendition.video {
            let mut codecs = video_codec_string(rendition.plan.video_codec, video.context());
            if let Some(audio) =
                &rendition.plan.audio.as_ref().filter(|_| rendition.audio.is_some())
            {
                codecs.push_str(match audio.codec {
                    AudioCodec::Aac => ",mp4a.40.2",
                    AudioCodec::Opus => ",opus",
                });
            }
            variants.push(hls::VariantInfo {
                name: rendition.plan.name.clone(),
                width: rendition.plan.width,
                height: rendition.plan.height,
                fps: rendition.plan.fps,
                codecs,
            });
        }
        reports.push(RenditionReport {
            name: rendition.plan.name.clone(),
            width: rendition.plan.width,
            height: rendition.plan.height,
            video_codec: rendition.plan.video_codec,
            audio_codec: rendition
                .plan
                .audio
                .as_ref()
                .filter(|_| rendition.audio.is_some() || plan.mode == Mode::Copy)
                .map(|a| a.codec),
            video_bit_rate: rendition.plan.video_bit_rate,
            mp4,
            hls,
        });
    }
    let hls_master = if plan.hls_segment_secs.is_some() {
        hls::write_master(&out.join("hls"), &variants, None)?;
        Some("hls/master.m3u8".to_owned())
    } else {
        None
    };
    let thumbnails = match thumbnails {
        // A chunk's share of the thumbnails waits for the stitch (`stitch_thumbnails`).
        Some(thumbs) if job.task.is_part() => {
            thumbs.write_part(&out.join(THUMBNAIL_PARTS_DIR))?;
            None
        }
        Some(thumbs) => {
            thumbs.finish(&out.join("thumbs"), output_secs)?;
            Some(vec![
                "thumbs/poster.jpg".to_owned(),
                "thumbs/storyboard.jpg".to_owned(),
                "thumbs/storyboard.vtt".to_owned(),
            ])
        }
        None => None,
    };
    let files = list_files(out)?;
    Ok(EngineReport {
        media: media.clone(),
        mode: plan.mode,
        renditions: reports,
        hls_master,
        thumbnails,
        files,
        frames,
        decode_errors,
        probe_secs: 0.0,
        deinterlaced: false,
    })
}

fn video_codec_string(codec: VideoCodec, context: &codec::Context) -> String {
    // SAFETY: reading the encoder's extradata and level, set when it was opened.
    let (extradata, level) = unsafe {
        let raw = context.as_ptr();
        let size = usize::try_from((*raw).extradata_size).unwrap_or(0);
        let data = if (*raw).extradata.is_null() || size == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts((*raw).extradata, size)
        };
        (data.to_vec(), (*raw).level)
    };
    match codec {
        VideoCodec::H264 => hls::avc_codec_string(&extradata),
        VideoCodec::Hevc => format!("hvc1.1.6.L{}.B0", if level > 0 { level } else { 120 }),
        VideoCodec::Av1 => "av01.0.08M.08".to_owned(),
        VideoCodec::Vp9 => "vp09.00.40.08".to_owned(),
    }
}

fn open_video_decoder(
    parameters: codec::Parameters,
    limits: &Limits,
) -> Result<ffmpeg::decoder::Video, EngineError> {
    let context = codec::context::Context::from_parameters(parameters)
        .map_err(|e| crate::error::input("video decoder", &e))?;
    let codec = ffmpeg::decoder::find(context.id()).ok_or_else(|| {
        EngineError::new(ErrorCode::UnsupportedCodec, "no decoder for the video codec")
    })?;
    let mut options = Dictionary::new();
    options.set("max_pixels", &limits.max_pixels.to_string());
    options.set("codec_whitelist", &codec_whitelist());
    options.set("threads", "auto");
    context
        .decoder()
        .open_as_with(codec, options)
        .and_then(|d| d.video())
        .map_err(|e| crate::error::input("open video decoder", &e))
}

fn open_audio_decoder(
    parameters: codec::Parameters,
) -> Result<ffmpeg::decoder::Audio, EngineError> {
    let context = codec::context::Context::from_parameters(parameters)
        .map_err(|e| crate::error::input("audio decoder", &e))?;
    let codec = ffmpeg::decoder::find(context.id()).ok_or_else(|| {
        EngineError::new(ErrorCode::UnsupportedCodec, "no decoder for the audio codec")
    })?;
    let mut options = Dictionary::new();
    options.set("codec_whitelist", &codec_whitelist());
    context
        .decoder()
        .open_as_with(codec, options)
        .and_then(|d| d.audio())
        .map_err(|e| crate::error::input("open audio decoder", &e))
}

/// Receives every frame the decoder has; returns the number of decode errors seen.
fn receive_video(
    decoder: &mut ffmpeg::decoder::Video,
    frame: &mut frame::Video,
    mut on_frame: impl FnMut(&frame::Video) -> Result<(), EngineError>,
) -> Result<u64, EngineError> {
    let mut errors = 0;
    loop {
        match decoder.receive_frame(frame) {
            Ok(()) => {
                if frame.is_corrupt() {
                    errors += 1;
                }
                on_frame(frame)?;
            }
            Err(ffmpeg::Error::Eof) => return Ok(errors),
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                return Ok(errors);
            }
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::ENOMEM => {
                return Err(EngineError::new(ErrorCode::Memory, "out of memory while decoding"));
            }
            Err(_) => errors += 1,
        }
    }
}

fn receive_audio(
    decoder: &mut ffmpeg::decoder::Audio,
    frame: &mut frame::Audio,
    renditions: &mut [Rendition],
) -> Result<u64, EngineError> {
    let mut errors = 0;
    loop {
        match decoder.receive_frame(frame) {
            Ok(()) => {
                for rendition in renditions.iter_mut() {
                    if let Some(audio) = &mut rendition.audio {
                        audio.send(frame)?;
                    }
                    rendition.drain_audio()?;
                }
            }
            Err(ffmpeg::Error::Eof) => return Ok(errors),
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                return Ok(errors);
            }
            Err(_) => errors += 1,
        }
    }
}

/// Every file under `dir` with its size and content type, paths relative and sorted.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<OutputFile>, EngineError> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).map_err(io_error)? {
            let path = entry.map_err(io_error)?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative =
                path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            let bytes = std::fs::metadata(&path).map_err(io_error)?.len();
            files.push(OutputFile {
                content_type: content_type(&relative).to_owned(),
                path: relative,
                bytes,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

pub(crate) fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("mp4") => "video/mp4",
        Some("m4s") => "video/iso.segment",
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("jpg") => "image/jpeg",
        Some("vtt") => "text/vtt",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}
