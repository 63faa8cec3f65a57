//! The pipeline: probe → plan → one pass over the input: every video packet is decoded once,
//! and each decoded frame feeds every rendition (scale → encode → mux into MP4 and/or HLS)
//! and the thumbnails; audio is decoded once and resampled/encoded per rendition. Then the
//! HLS master playlist is written and every output is probed before it counts.

mod audio;
pub(crate) mod captions;
mod colour;
mod decode;
pub(crate) mod files;
pub(crate) mod hls;
pub(crate) mod loudness;
mod meter;
pub(crate) mod mp4_text;
mod normalize;
pub(crate) mod output;
mod picture;
mod pipeline;
pub(crate) mod preview;
pub(crate) mod thumbs;
mod timeline;
pub(crate) mod title_audio;
pub(crate) mod validate;
mod video;

use std::path::Path;
use std::time::Instant;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::media::Type;
use ffmpeg_next::{Dictionary, Packet, Rational, codec, frame};

use self::audio::{AudioEncoder, SourceAudio};
use self::colour::{ColourPlan, HdrMetadata, Tags};
use self::normalize::{Normalizer, SourcePictures};
use self::output::{Muxer, Track};
use self::thumbs::Thumbnails;
use self::video::{VideoEncoder, VideoSettings};
use tcoder::engine::limits::{Limits, codec_whitelist};
use tcoder::engine::quality::{measure_every, measure_windows};
use tcoder::engine::{
    AudioTrackReport, Chunk, DynamicRange, EngineError, EngineJob, EnginePlan, EngineReport,
    ErrorCode, LadderReport, MediaInfo, Mode, OutputFile, Progress, RenditionPlan, RenditionReport,
    Task, plan,
};
use tcoder::jobs::VideoCodec;

use self::decode::*;
use self::files::*;
use self::pipeline::*;
use self::timeline::*;
use crate::probe;
use crate::quality::Sampling;

/// What `plan` would make of `media`: the renditions and where their files go, no file yet
/// (the report of a probe, and the frame of a stitch's).
pub(crate) fn planned_report(media: &MediaInfo, plan: &EnginePlan) -> EngineReport {
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
            dynamic_range: r.dynamic_range,
            quality: None,
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
        loudness: None,
        captions: Vec::new(),
        audio_tracks: audio_track_reports(plan, plan.audio_renditions.len() > 1),
        ladder: None,
    }
}

/// The audio tracks of an HLS title as reported; `separate`: each has its own playlist.
pub(crate) fn audio_track_reports(plan: &EnginePlan, separate: bool) -> Vec<AudioTrackReport> {
    plan.audio_renditions
        .iter()
        .map(|r| AudioTrackReport {
            name: r.name.as_str().to_owned(),
            language: r.language.as_ref().map(|l| l.as_str().to_owned()),
            default: r.default,
            hls: separate.then(|| format!("hls/{}/index.m3u8", r.dir)),
        })
        .collect()
}

/// A source that passed the probe, and the plan of its outputs.
pub(crate) struct Probed {
    pub(crate) input: crate::source::Source,
    pub(crate) media: MediaInfo,
    pub(crate) plan: EnginePlan,
    pub(crate) probe_secs: f64,
}

/// Phase 1: opens the source under the limits (the probe refuses what the engine does not
/// take), tells `on_probed` what it is, and plans its outputs.
pub(crate) fn probe_and_plan(
    job: &EngineJob,
    on_probed: &mut dyn FnMut(&MediaInfo),
) -> Result<Probed, EngineError> {
    let probe_started = Instant::now();
    let (input, media) = probe::open(&job.input, &job.limits)?;
    let probe_secs = probe_started.elapsed().as_secs_f64();
    on_probed(&media);
    let mut plan = plan(&job.spec, &media, job.settings.segment_secs, job.limits.max_output_fps);
    if let Some(ladder) = decided_ladder(job) {
        tcoder::engine::plan::apply_ladder(&mut plan, ladder);
    }
    Ok(Probed { input, media, plan, probe_secs })
}

/// The per-title decision made before this run (by a split title's probe task), if any.
pub(crate) fn decided_ladder(job: &EngineJob) -> Option<&LadderReport> {
    job.ladder.as_ref().or_else(|| job.task.chunk().and_then(|c| c.ladder.as_ref()))
}

/// The report of a probe task: what the plan would make, no file.
pub(crate) fn probed_report(probed: &Probed) -> EngineReport {
    EngineReport { probe_secs: probed.probe_secs, ..planned_report(&probed.media, &probed.plan) }
}

/// A whole title, or one part of a split one, with the per-title decision `ladder` (applied
/// to the plan already): the encode measured in its sampled windows, and the quality floor
/// checked.
pub(crate) fn encode(
    job: &EngineJob,
    probed: Probed,
    ladder: Option<LadderReport>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<EngineReport, EngineError> {
    let windows = match job.task {
        Task::Audio(_) => Vec::new(),
        _ => measure_windows(probed.media.duration_secs, probed.plan.keyframe_secs()),
    };
    let every = measure_every(probed.media.duration_secs, &windows);
    let sampling = Sampling { windows, every };
    let mut report = encode_measured(job, probed, &sampling, on_progress)?;
    if job.task == Task::Whole {
        report.ladder = ladder;
        crate::quality::check_floor(&job.spec, &mut report)?;
    }
    Ok(report)
}

/// Phases 2–4 of a whole title, or of one part of a split one (a chunk's video, the title's
/// audio): decoders and every rendition's encoders and muxers, one pass over the input, then
/// every output closed and checked. The renditions' quality is measured as `sampling` says.
pub(crate) fn encode_measured(
    job: &EngineJob,
    probed: Probed,
    sampling: &Sampling,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<EngineReport, EngineError> {
    let Probed { mut input, media, mut plan, probe_secs } = probed;
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
        None => encoder_time_base(source.video_rates, media.video.fps, max_output_fps),
    };
    // Several audio tracks: HLS audio renditions of their own, timed as a split title's are.
    let separate_audio = job.task == Task::Whole && plan.audio_renditions.len() > 1;
    let delay_secs = match job.task.is_part() || separate_audio {
        true => split_delay_secs(job, &title_plan, encoder_tb)?,
        false => 0.0,
    };
    if let Some(range) = job.task.audio() {
        let mut report =
            title_audio::run(job, &mut input, &media, &plan, &source, (range, delay_secs))?;
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
    // The default track muxed into the renditions (MP4s always; HLS variants when it is the
    // only one).
    let audio_decoder = match (&source.audio, plan.mode) {
        (Some(audio), Mode::Transcode) if chunk.is_none() && (plan.mp4 || !separate_audio) => {
            Some(open_audio_decoder(audio.params.clone())?)
        }
        _ => None,
    };
    let kept_range = plan.renditions.first().map_or(DynamicRange::Sdr, |r| r.dynamic_range);
    let mut colour = ColourPlan::new(Tags::of(&source.video_params), media.video.height);
    if plan.mode == Mode::Transcode && kept_range != DynamicRange::Sdr {
        colour.hdr = Some(HdrMetadata::of(&first_picture(job, &media)?));
    }
    let normalisation = match (&audio_decoder, &source.audio) {
        (Some(_), Some(audio)) => loudness::Normalisation::of(job, &media, audio.index)?,
        _ => None,
    };
    let gain_db = normalisation.map(|n| n.gain_db);
    let mut renditions = open_renditions(
        job,
        &plan,
        &source,
        encoder_tb,
        audio_decoder.as_ref(),
        &colour,
        gain_db,
        sampling,
    )?;
    for muxer in renditions.iter_mut().flat_map(|r| r.muxers.iter_mut()) {
        muxer.delay_by(delay_secs);
    }
    let meter_secs = until_secs.unwrap_or(media.duration_secs) - from_secs;

    // Phase 3: one pass over the input.
    let mut pass = Pass {
        renditions,
        thumbnails: plan.thumbnails.as_ref().map(|thumbs| {
            let thumbnails = Thumbnails::for_range(thumbs, from_secs, until_secs);
            // JPEGs are SDR: tone-mapped here when the renditions keep HDR (a copy's do).
            match colour.tone_map_chain() {
                Some(chain) if !colour.tone_maps(kept_range) => {
                    thumbnails.tone_mapped(Normalizer::tone_mapping(chain, source.video_tb))
                }
                _ => thumbnails,
            }
        }),
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
            // A copy's plan keeps the source's range, so only a transcode to SDR maps here.
            tone_map: colour.tone_map_chain().filter(|_| colour.tone_maps(kept_range)),
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
    let mut loudness = normalisation
        .and_then(|n| n.report(pass.renditions.iter().find_map(|r| r.audio.as_ref()?.loudness())));
    let mut alternates = Alternates::default();
    let mut decode_errors = pass.decode_errors;
    if separate_audio {
        let (errors, tracks_loudness) = title_audio::encode_tracks(
            job,
            None,
            &media,
            &plan,
            &source,
            (&Chunk::default(), delay_secs),
        )?;
        decode_errors += errors;
        loudness = loudness.or(tracks_loudness);
        let codec = plan.renditions.iter().find_map(|r| r.audio.as_ref()).map(|a| a.codec);
        alternates.audio = plan
            .audio_renditions
            .iter()
            .map(|r| hls::AudioRendition::planned(r, codec.unwrap_or_default()))
            .collect();
    }
    if job.task == Task::Whole && !plan.captions.is_empty() {
        // Subtitle segments end where the video's do, on the variants' timeline.
        let top = plan.renditions.first().map(|r| r.name.clone()).unwrap_or_default();
        let playlist = job.output_dir.join("hls").join(top).join("index.m3u8");
        let hls = match plan.hls_segment_secs {
            Some(_) => Some((
                captions::segment_boundaries(&playlist)?,
                validate::first_video_secs(&playlist)?,
            )),
            None => None,
        };
        let hls = hls.as_ref().map(|(ends, start)| (ends.as_slice(), *start));
        let written = captions::write(job, &media, &plan.captions, output_secs, hls)?;
        if plan.mp4 && job.spec.mp4_captions {
            mp4_text::add_to_renditions(&job.output_dir, &plan, &written.cues)?;
        }
        alternates.captions = written.reports;
        alternates.subtitles = written.renditions;
        alternates.warnings = written.warnings;
    }
    let frames = pass.meter.frames;
    let mut report = finish(
        job,
        &media,
        &plan,
        pass.renditions,
        pass.thumbnails,
        frames,
        decode_errors,
        output_secs,
        alternates,
    )?;
    report.probe_secs = probe_secs;
    report.deinterlaced = deinterlaced;
    report.loudness = loudness;
    Ok(report)
}
