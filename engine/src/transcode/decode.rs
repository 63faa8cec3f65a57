//! The source as the pass reads it (streams, rates, where its timeline starts) and its
//! decoders: opened with the limits, fed packet by packet, drained frame by frame.

use super::*;

/// The source's streams as the pass needs them.
pub(crate) struct Source {
    pub(crate) video_index: usize,
    pub(crate) video_tb: Rational,
    pub(crate) video_params: codec::Parameters,
    pub(crate) video_rates: (Rational, Rational),
    pub(crate) top_field_first: Option<bool>,
    pub(crate) display_matrix: Option<Vec<u8>>,
    pub(crate) audio: Option<SourceStream>,
    /// Where the output timeline starts (seconds of the source), and that in the video's
    /// time base.
    pub(crate) origin_secs: f64,
    pub(crate) video_offset: i64,
    /// Kind and time base of every stream (for the timeline).
    pub(crate) kinds: Vec<Type>,
    pub(crate) bases: Vec<Rational>,
}

pub(crate) struct SourceStream {
    pub(crate) index: usize,
    pub(crate) time_base: Rational,
    pub(crate) params: codec::Parameters,
}

impl Source {
    pub(crate) fn read(
        input: &ffmpeg::format::context::Input,
        media: &MediaInfo,
        mode: Mode,
    ) -> Source {
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
        // A transcode's timeline starts at the first video frame, or with the audio when that
        // plays before it (`MediaInfo::audio_lead_secs`; audio further ahead is cut), audio
        // starting later is preceded by silence; a stream copy keeps both streams whole.
        let origin_secs = match (mode, video_start, audio_start) {
            // Sound before the first picture: the timeline starts with it, the first picture
            // is held over it (`show`).
            (Mode::Transcode, Some(video), _) => video - media.audio_lead_secs,
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
    pub(crate) fn offset_in(&self, time_base: Rational) -> i64 {
        (self.origin_secs / f64::from(time_base)).round() as i64
    }
}

/// Sends `packet` to `decoder` (`None`: end of stream); `false` when the decoder refused the
/// packet (a decode error; the end of stream is never one).
pub(crate) fn feed(decoder: &mut ffmpeg::decoder::Opened, packet: Option<&Packet>) -> bool {
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
pub(crate) fn check_complete(media: &MediaInfo, timeline: &Timeline) -> Result<(), EngineError> {
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

/// A decoder for `parameters` (a stream's), restricted to the accepted codecs' decoders;
/// `what` names the stream kind in errors, `extra` adds options.
fn open_decoder(
    parameters: codec::Parameters,
    what: &str,
    extra: &[(&str, String)],
) -> Result<ffmpeg::decoder::Opened, EngineError> {
    let context = codec::context::Context::from_parameters(parameters)
        .map_err(|e| crate::error::input(&format!("{what} decoder"), &e))?;
    let codec = ffmpeg::decoder::find(context.id()).ok_or_else(|| {
        EngineError::new(ErrorCode::UnsupportedCodec, format!("no decoder for the {what} codec"))
    })?;
    let mut options = Dictionary::new();
    options.set("codec_whitelist", &codec_whitelist());
    for (key, value) in extra {
        options.set(key, value);
    }
    context
        .decoder()
        .open_as_with(codec, options)
        .map_err(|e| crate::error::input(&format!("open {what} decoder"), &e))
}

pub(crate) fn open_video_decoder(
    parameters: codec::Parameters,
    limits: &Limits,
) -> Result<ffmpeg::decoder::Video, EngineError> {
    let options = [("max_pixels", limits.max_pixels.to_string()), ("threads", "auto".to_owned())];
    open_decoder(parameters, "video", &options)?
        .video()
        .map_err(|e| crate::error::input("open video decoder", &e))
}

pub(crate) fn open_audio_decoder(
    parameters: codec::Parameters,
) -> Result<ffmpeg::decoder::Audio, EngineError> {
    open_decoder(parameters, "audio", &[])?
        .audio()
        .map_err(|e| crate::error::input("open audio decoder", &e))
}

pub(crate) fn open_subtitle_decoder(
    parameters: codec::Parameters,
) -> Result<ffmpeg::decoder::Subtitle, EngineError> {
    open_decoder(parameters, "subtitle", &[])?
        .subtitle()
        .map_err(|e| crate::error::input("open subtitle decoder", &e))
}

/// Receives every frame the decoder has; returns the number of decode errors seen.
pub(crate) fn receive_video(
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

pub(crate) fn receive_audio(
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

/// Packets read at most looking for the first picture (a decoder with frame threads holds a
/// few; a source that yields no picture in this many is refused by the pass anyway).
const FIRST_PICTURE_PACKETS: usize = 256;

/// The source's first decoded picture, from a second opening of the file (the pass's own
/// input stays at its start): what HEVC and AV1 carry only in the bitstream (HDR mastering
/// metadata) is known before the encoders open.
pub(crate) fn first_picture(
    job: &EngineJob,
    media: &MediaInfo,
) -> Result<frame::Video, EngineError> {
    let (mut input, _) = crate::probe::open(&job.input, &job.limits)?;
    let stream = input.stream(media.video.index).expect("probed stream");
    let mut decoder = open_video_decoder(stream.parameters(), &job.limits)?;
    let mut picture = frame::Video::empty();
    let mut read = 0;
    for (stream, packet) in input.packets() {
        if stream.index() != media.video.index {
            continue;
        }
        read += 1;
        if read > FIRST_PICTURE_PACKETS {
            break;
        }
        feed(&mut decoder, Some(&packet));
        if decoder.receive_frame(&mut picture).is_ok() {
            return Ok(picture);
        }
    }
    feed(&mut decoder, None);
    decoder
        .receive_frame(&mut picture)
        .map(|()| picture)
        .map_err(|_| EngineError::new(ErrorCode::Corrupt, "no video frame could be decoded"))
}
