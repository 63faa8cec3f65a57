//! The audio item of a split job: the whole title's audio, encoded once into an HLS audio
//! rendition (`hls/audio/`), on the same timeline as the chunks' video. Video packets are read
//! (not decoded) so the audio is cut or padded to the video's end exactly as the whole-title
//! encode does, and so a truncated source is refused here as it would be there. Its timestamps
//! move by the same delay as the chunks' (see `split_delay_secs`).

use ffmpeg_next as ffmpeg;
use ffmpeg_next::frame;

use tcoder::engine::{
    EngineError, EngineJob, EnginePlan, EngineReport, ErrorCode, MediaInfo, Mode,
};

use super::audio::{AudioEncoder, SourceAudio};
use super::decode::{Source, check_complete, feed, open_audio_decoder};
use super::files::{io_error, list_files};
use super::loudness::{Normalisation, REPORT_FILE};
use super::output::{self, Muxer, Track};
use super::timeline::Timeline;

/// Where the audio rendition goes, under the output directory.
pub(crate) const AUDIO_DIR: &str = "hls/audio";

pub(super) fn run(
    job: &EngineJob,
    input: &mut ffmpeg::format::context::Input,
    media: &MediaInfo,
    plan: &EnginePlan,
    source: &Source,
    delay_secs: f64,
) -> Result<EngineReport, EngineError> {
    let segment_secs = plan
        .hls_segment_secs
        .filter(|_| plan.mode == Mode::Transcode)
        .ok_or_else(|| EngineError::new(ErrorCode::Failed, "only an HLS transcode is split"))?;
    let mut timeline = Timeline::for_source(source, media.video.fps);
    // The best-planned audio (renditions' audio differs only in bit rate): one for all.
    let audio_plan =
        plan.renditions.iter().filter_map(|r| r.audio.clone()).max_by_key(|a| a.bit_rate);
    let (Some(stream), Some(audio_plan)) = (&source.audio, audio_plan) else {
        // A silent title: nothing to encode, but the source is still read whole.
        read_all(input, source, &mut timeline)?;
        check_complete(media, &timeline)?;
        return report(job, media, 0);
    };
    let mut decoder = open_audio_decoder(stream.params.clone())?;
    let decoded = SourceAudio::of(&decoder, stream.time_base);
    let normalisation = Normalisation::of(job, media)?;
    let gain_db = normalisation.map(|n| n.gain_db);
    let mut encoder =
        AudioEncoder::open(&audio_plan, &decoded, source.offset_in(stream.time_base), gain_db)?;
    let dir = job.output_dir.join(AUDIO_DIR);
    std::fs::create_dir_all(&dir).map_err(io_error)?;
    let mut muxer = Muxer::create(
        &dir.join("index.m3u8"),
        "hls",
        output::hls_options(&dir, segment_secs, Some(0)),
    )?;
    muxer.add_stream(Track::Audio, encoder.context(), None)?;
    muxer.delay_by(delay_secs);
    muxer.write_header()?;
    let write = |encoder: &mut AudioEncoder, muxer: &mut Muxer| -> Result<(), EngineError> {
        while let Some(packet) = encoder.receive() {
            muxer.write(Track::Audio, &packet, encoder.time_base)?;
        }
        Ok(())
    };

    let (mut frame, mut errors, mut packets) = (frame::Audio::empty(), 0u64, 0u64);
    for (stream_in, packet) in input.packets() {
        let index = stream_in.index();
        timeline.packet(&packet, source.bases[index], source.kinds.get(index).copied());
        if index != stream.index {
            continue;
        }
        packets += 1;
        if !feed(&mut decoder, Some(&packet)) {
            errors += 1;
            continue;
        }
        errors += receive(&mut decoder, &mut frame, &mut encoder)?;
        encoder.release(timeline.video_end)?;
        write(&mut encoder, &mut muxer)?;
    }
    feed(&mut decoder, None);
    errors += receive(&mut decoder, &mut frame, &mut encoder)?;
    let allowed = (packets as f64 * job.limits.max_error_rate).floor() as u64;
    if errors > allowed {
        return Err(EngineError::new(
            ErrorCode::Corrupt,
            format!(
                "{errors} audio decode errors in {packets} packets (at most {allowed} tolerated)"
            ),
        ));
    }
    check_complete(media, &timeline)?;
    encoder.finish(timeline.video_end)?;
    write(&mut encoder, &mut muxer)?;
    muxer.finish()?;
    if let Some(loudness) = normalisation.and_then(|n| n.report(encoder.loudness())) {
        // For the stitch, which reports the title's loudness (see `stitch::run`).
        let json = serde_json::to_vec(&loudness).expect("a loudness report serializes");
        std::fs::write(job.output_dir.join(REPORT_FILE), json).map_err(io_error)?;
    }
    report(job, media, errors)
}

/// Demuxes every packet (for the timeline) without decoding any.
fn read_all(
    input: &mut ffmpeg::format::context::Input,
    source: &Source,
    timeline: &mut Timeline,
) -> Result<(), EngineError> {
    for (stream, packet) in input.packets() {
        let index = stream.index();
        timeline.packet(&packet, source.bases[index], source.kinds.get(index).copied());
    }
    Ok(())
}

fn receive(
    decoder: &mut ffmpeg::decoder::Audio,
    frame: &mut frame::Audio,
    encoder: &mut AudioEncoder,
) -> Result<u64, EngineError> {
    let mut errors = 0;
    loop {
        match decoder.receive_frame(frame) {
            Ok(()) => encoder.send(frame)?,
            Err(ffmpeg::Error::Eof) => return Ok(errors),
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                return Ok(errors);
            }
            Err(_) => errors += 1,
        }
    }
}

/// The report of an audio item: no video renditions; its files (`hls/audio/…`) say the rest.
fn report(
    job: &EngineJob,
    media: &MediaInfo,
    decode_errors: u64,
) -> Result<EngineReport, EngineError> {
    std::fs::create_dir_all(&job.output_dir).map_err(io_error)?;
    Ok(EngineReport {
        media: media.clone(),
        mode: Mode::Transcode,
        renditions: Vec::new(),
        hls_master: None,
        thumbnails: None,
        files: list_files(&job.output_dir)?,
        frames: 0,
        decode_errors,
        probe_secs: 0.0,
        deinterlaced: false,
        loudness: None,
    })
}
