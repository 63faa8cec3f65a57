//! Opening an untrusted source: only local files, only MP4/MOV or Matroska/WebM, only
//! allowlisted codecs, and the policy checks (one video stream, dimensions, duration, frame
//! rate, stream count) done on the container header before any frame is decoded.

use std::ffi::CString;
use std::io::Read;
use std::path::Path;
use std::ptr;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;
use ffmpeg_next::format::context::Input;
use ffmpeg_next::media::Type;

pub use crate::source::Source;
use crate::source::SourceFile;

use tcoder::engine::limits::{
    CAPTION_FILES, Limits, MIN_DIMENSION, codec_whitelist, format_whitelist, is_accepted_audio,
    is_accepted_video, is_text_subtitle,
};
use tcoder::engine::{
    AudioInfo, AudioTrack, ColourInfo, EngineError, ErrorCode, MediaInfo, Orientation,
    SubtitleTrack, TrackLanguage, TrackName, VideoInfo, audio_lead_secs, displayed_size,
};

/// Initialises FFmpeg once and keeps its own logging quiet (errors surface as typed errors).
pub(crate) fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let _ = ffmpeg::init();
        ffmpeg::log::set_level(ffmpeg::log::Level::Fatal);
    });
}

/// The container family, judged from the first bytes, before FFmpeg sees the file: only the
/// families of [`CONTAINERS`](super::limits::CONTAINERS) get past.
fn sniff(path: &Path) -> Result<(), EngineError> {
    let mut head = [0u8; 400];
    let mut file = SourceFile::open(path)
        .map_err(|e| EngineError::new(ErrorCode::Failed, format!("cannot open input: {e}")))?;
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(EngineError::new(ErrorCode::Failed, format!("cannot read input: {e}")));
            }
        }
    }
    if read == 0 {
        return Err(EngineError::new(ErrorCode::Corrupt, "the file is empty"));
    }
    if sniff_container(&head[..read]).is_some() {
        Ok(())
    } else {
        Err(EngineError::new(
            ErrorCode::UnsupportedFormat,
            "not a video container tcoder accepts (MP4/MOV, Matroska/WebM, MPEG-TS, AVI, FLV, MPEG-PS)",
        ))
    }
}

/// The accepted container family the first bytes belong to.
pub(crate) fn sniff_container(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, bytes: &[u8]| head.get(offset..offset + bytes.len()) == Some(bytes);
    let ts_sync = |first: usize, stride: usize| {
        head.len() > first + stride
            && (0..3).all(|i| head.get(first + i * stride).is_none_or(|b| *b == 0x47))
    };
    if head.len() >= 8
        && matches!(
            &head[4..8],
            b"ftyp" | b"moov" | b"mdat" | b"free" | b"wide" | b"skip" | b"pnot"
        )
    {
        Some("mov")
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("matroska")
    } else if at(0, b"RIFF") && at(8, b"AVI ") {
        Some("avi")
    } else if at(0, b"FLV") && head.get(3) == Some(&1) {
        Some("flv")
    } else if at(0, &[0, 0, 1, 0xBA]) {
        Some("mpeg")
    } else if ts_sync(0, 188) || ts_sync(4, 192) {
        Some("mpegts")
    } else {
        None
    }
}

/// An FFmpeg dictionary of `entries`. These set the restrictions (protocol, format and codec
/// whitelists, the pixel cap): a dictionary missing one must never reach FFmpeg, so a failed
/// `av_dict_set` is an error, not a dropped option.
fn dict(entries: &[(&str, String)]) -> Result<*mut ffi::AVDictionary, EngineError> {
    let mut dict: *mut ffi::AVDictionary = ptr::null_mut();
    for (key, value) in entries {
        let (key, value) =
            (CString::new(*key).expect("no NUL"), CString::new(value.as_str()).expect("no NUL"));
        // SAFETY: av_dict_set copies both strings; `dict` is ours.
        let set = unsafe { ffi::av_dict_set(&mut dict, key.as_ptr(), value.as_ptr(), 0) };
        if set < 0 {
            // SAFETY: frees what was set so far (null is fine).
            unsafe { ffi::av_dict_free(&mut dict) };
            return Err(EngineError::new(
                ErrorCode::Memory,
                format!("cannot set the FFmpeg option {}", key.to_string_lossy()),
            ));
        }
    }
    Ok(dict)
}

/// Opens the source under the restrictions and checks it against `limits`.
pub fn open(path: &Path, limits: &Limits) -> Result<(Source, MediaInfo), EngineError> {
    init();
    sniff(path)?;
    let mut input = open_source(path)?;
    // Streams the header declares are checked before anything is decoded. Formats without a
    // header (FLV, MPEG-PS) only know theirs after find_stream_info, which is itself guarded
    // by the pixel cap below; everything is checked again after it.
    check_header(&input, limits, false)?;
    find_stream_info(&mut input, limits)?;
    check_header(&input, limits, true)?;
    let external = if input.format().name().starts_with("mov") {
        crate::mov_refs::external_tracks(path)
    } else {
        Vec::new()
    };
    let scanned = match declares_duration(&input) {
        true => None,
        false => Some(scanned_duration(path, limits)?),
    };
    let media = describe(&input, limits, &external, scanned)?;
    Ok((input, media))
}

/// Whether the container or the video stream says how long the title is.
fn declares_duration(input: &Input) -> bool {
    input.duration() > 0 || video_streams(input).first().and_then(stream_duration).is_some()
}

/// How long a source whose header does not say lasts (a browser's `MediaRecorder` `WebM` has no
/// Duration element and no cues; FFmpeg plays it fine): the end of its last video packet, read
/// without decoding anything, and refused as too long as soon as it passes the limit.
fn scanned_duration(path: &Path, limits: &Limits) -> Result<f64, EngineError> {
    let mut input = open_source(path)?;
    let video = video_streams(&input)
        .first()
        .map(|s| (s.index(), f64::from(s.time_base())))
        .ok_or_else(|| EngineError::new(ErrorCode::NoVideo, "no video stream"))?;
    let (index, time_base) = video;
    let (mut first, mut end) = (f64::INFINITY, 0.0_f64);
    for (stream, packet) in input.packets() {
        if stream.index() != index {
            continue;
        }
        let Some(pts) = packet.pts().or(packet.dts()) else { continue };
        let start = pts as f64 * time_base;
        first = first.min(start);
        end = end.max(start + packet.duration().max(0) as f64 * time_base);
        if end - first > limits.max_duration_secs {
            return Err(EngineError::new(
                ErrorCode::TooLong,
                format!("longer than the limit of {:.0} s", limits.max_duration_secs),
            ));
        }
    }
    Ok(if first.is_finite() { end - first } else { 0.0 })
}

/// The allowlists (protocols, formats, codecs) and probe sizes every open applies.
fn restricted_options(formats: &str, codecs: &str) -> Result<*mut ffi::AVDictionary, EngineError> {
    dict(&[
        ("protocol_whitelist", "file".to_owned()),
        ("format_whitelist", formats.to_owned()),
        ("codec_whitelist", codecs.to_owned()),
        ("probesize", "5000000".to_owned()),
        ("analyzeduration", "10000000".to_owned()),
    ])
}

fn c_path(path: &Path) -> Result<CString, EngineError> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| EngineError::new(ErrorCode::Failed, "bad path"))
}

/// Opens the source with the allowlists, read through [`SourceFile`](crate::source): only
/// bytes the worker has downloaded (the rest waited for).
fn open_source(path: &Path) -> Result<Source, EngineError> {
    let name = c_path(path)?;
    let mut options = restricted_options(&format_whitelist(), &codec_whitelist())?;
    let opened = crate::source::open_input(path, &name, &mut options);
    // SAFETY: `options` is ours (what avformat_open_input left of it).
    unsafe { ffi::av_dict_free(&mut options) };
    opened
}

/// Opens `path` (a complete local file) with the protocol, format and codec allowlists.
fn open_restricted(path: &Path, formats: &str, codecs: &str) -> Result<Input, EngineError> {
    let c_path = c_path(path)?;
    let mut options = restricted_options(formats, codecs)?;
    let mut context: *mut ffi::AVFormatContext = ptr::null_mut();
    // SAFETY: standard avformat_open_input use; `options` is freed below, `context` is owned
    // by the returned `Input` (or closed on every error path).
    let opened = unsafe {
        ffi::avformat_open_input(&mut context, c_path.as_ptr(), ptr::null_mut(), &mut options)
    };
    // SAFETY: `options` is ours (what avformat_open_input left of it).
    unsafe { ffi::av_dict_free(&mut options) };
    if opened < 0 {
        let error = ffmpeg::Error::from(opened);
        let code = match error {
            ffmpeg::Error::InvalidData | ffmpeg::Error::Eof => ErrorCode::Corrupt,
            ffmpeg::Error::Other { errno } if errno == libc_enomem() => ErrorCode::Memory,
            _ => ErrorCode::Corrupt,
        };
        return Err(EngineError::new(code, format!("cannot open the container: {error}")));
    }
    // SAFETY: `context` is a valid, opened format context from here on, owned by `input`.
    Ok(unsafe { Input::wrap(context) })
}

/// Opens a caption file the job names: FFmpeg's SRT and WebVTT demuxers only, and text (no
/// NUL byte in its first bytes — FFmpeg's text probes would otherwise look inside binary
/// files). Returns the input and its subtitle stream's index.
pub(crate) fn open_caption_file(path: &Path) -> Result<(Input, usize), EngineError> {
    init();
    let not_captions =
        || EngineError::new(ErrorCode::UnsupportedFormat, "not an SRT or WebVTT file".to_owned());
    // Only the head is looked at here; FFmpeg reads the file itself.
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(path)
        .and_then(|file| file.take(4096).read_to_end(&mut head))
        .map_err(|e| EngineError::new(ErrorCode::Failed, format!("cannot read: {e}")))?;
    if head.is_empty() || head.contains(&0) {
        return Err(not_captions());
    }
    let formats: Vec<&str> = CAPTION_FILES.iter().map(|(format, _)| *format).collect();
    let codecs: Vec<&str> = CAPTION_FILES.iter().map(|(_, codec)| *codec).collect();
    let input =
        open_restricted(path, &formats.join(","), &codecs.join(",")).map_err(|_| not_captions())?;
    let stream = input
        .streams()
        .find(|s| s.parameters().medium() == ffmpeg::media::Type::Subtitle)
        .ok_or_else(not_captions)?;
    let index = stream.index();
    Ok((input, index))
}

/// Reads the first frames of every stream, each decoder under the pixel cap and the codec
/// allowlist.
fn find_stream_info(input: &mut Input, limits: &Limits) -> Result<(), EngineError> {
    let streams = input.nb_streams() as usize;
    // find_stream_info decodes a few frames: give every stream's decoder the pixel cap and the
    // codec allowlist, so a header that lies about its size still cannot allocate a bomb.
    let mut stream_options: Vec<*mut ffi::AVDictionary> = Vec::with_capacity(streams);
    for _ in 0..streams {
        match dict(&[
            ("max_pixels", limits.max_pixels.to_string()),
            ("codec_whitelist", codec_whitelist()),
        ]) {
            Ok(options) => stream_options.push(options),
            Err(error) => {
                for options in &mut stream_options {
                    // SAFETY: each dictionary is ours.
                    unsafe { ffi::av_dict_free(options) };
                }
                return Err(error);
            }
        }
    }
    // SAFETY: one dictionary per stream, as avformat_find_stream_info expects; freed after.
    let found =
        unsafe { ffi::avformat_find_stream_info(input.as_mut_ptr(), stream_options.as_mut_ptr()) };
    for options in &mut stream_options {
        // SAFETY: each dictionary is ours (what find_stream_info left of it).
        unsafe { ffi::av_dict_free(options) };
    }
    if found < 0 {
        return Err(EngineError::new(
            ErrorCode::Corrupt,
            format!("cannot read the streams: {}", ffmpeg::Error::from(found)),
        ));
    }
    Ok(())
}

fn libc_enomem() -> i32 {
    ffmpeg::util::error::ENOMEM
}

/// Video streams that are real video (not cover art).
fn video_streams(input: &Input) -> Vec<ffmpeg::format::stream::Stream<'_>> {
    input
        .streams()
        .filter(|s| s.parameters().medium() == Type::Video)
        .filter(|s| !s.disposition().contains(ffmpeg::format::stream::Disposition::ATTACHED_PIC))
        .collect()
}

fn dimensions(stream: &ffmpeg::format::stream::Stream<'_>) -> (u32, u32) {
    let parameters = stream.parameters();
    // SAFETY: reading plain fields of the stream's codec parameters.
    let (w, h) = unsafe { ((*parameters.as_ptr()).width, (*parameters.as_ptr()).height) };
    (u32::try_from(w).unwrap_or(0), u32::try_from(h).unwrap_or(0))
}

/// Attached files (fonts) a source may carry.
const MAX_ATTACHMENTS: usize = 256;

/// Checks what the container declares: stream count, dimensions, and (once the streams are
/// `complete`) exactly one video stream.
fn check_header(input: &Input, limits: &Limits, complete: bool) -> Result<(), EngineError> {
    // Attachments (the fonts of a subtitled Matroska file: a fansub release carries a couple
    // dozen) are no media: nothing decodes them. They have their own, wider bound.
    let attachments =
        input.streams().filter(|s| s.parameters().medium() == Type::Attachment).count();
    let streams = input.nb_streams() as usize - attachments;
    if streams > limits.max_streams {
        return Err(EngineError::new(
            ErrorCode::TooManyStreams,
            format!("{streams} streams (at most {})", limits.max_streams),
        ));
    }
    if attachments > MAX_ATTACHMENTS {
        return Err(EngineError::new(
            ErrorCode::TooManyStreams,
            format!("{attachments} attachments (at most {MAX_ATTACHMENTS})"),
        ));
    }
    let videos = video_streams(input);
    for video in &videos {
        let (w, h) = dimensions(video);
        if w > limits.max_width
            || h > limits.max_height
            || u64::from(w) * u64::from(h) > limits.max_pixels
        {
            return Err(EngineError::new(
                ErrorCode::TooLargeDimensions,
                format!("{w}x{h} exceeds {}x{}", limits.max_width, limits.max_height),
            ));
        }
    }
    match videos.len() {
        0 if complete => Err(EngineError::new(ErrorCode::NoVideo, "no video stream")),
        0 | 1 => Ok(()),
        n => Err(EngineError::new(
            ErrorCode::TooManyStreams,
            format!("{n} video streams (exactly one is supported)"),
        )),
    }
}

/// Builds [`MediaInfo`] and applies the remaining policy (codecs, sizes, duration, frame
/// rate).
fn describe(
    input: &Input,
    limits: &Limits,
    external: &[u32],
    scanned_duration: Option<f64>,
) -> Result<MediaInfo, EngineError> {
    let outside = |stream: &ffmpeg::format::stream::Stream<'_>| {
        u32::try_from(stream.id()).is_ok_and(|id| external.contains(&id))
    };
    let videos = video_streams(input);
    let [video] = videos.as_slice() else {
        return Err(EngineError::new(ErrorCode::NoVideo, "no single video stream"));
    };
    if outside(video) {
        return Err(EngineError::new(
            ErrorCode::Corrupt,
            "the video track's data is in another file (an external reference), not in the upload",
        ));
    }
    let mut warnings = Vec::new();
    let video_codec = video.parameters().id().name().to_owned();
    if !is_accepted_video(&video_codec) {
        return Err(EngineError::new(
            ErrorCode::UnsupportedCodec,
            format!("video codec `{video_codec}` is not supported"),
        ));
    }
    let (width, height) = dimensions(video);
    if width == 0 || height == 0 {
        return Err(EngineError::new(ErrorCode::Corrupt, "the video stream has no dimensions"));
    }
    let sample_aspect_ratio = sample_aspect_ratio(video);
    let orientation = orientation(video);
    let (display_width, display_height) =
        displayed_size(width, height, sample_aspect_ratio, orientation);
    let rate = match video.avg_frame_rate() {
        r if r.numerator() > 0 && r.denominator() > 0 => r,
        _ => video.rate(),
    };
    let fps = if rate.denominator() > 0 {
        f64::from(rate.numerator()) / f64::from(rate.denominator())
    } else {
        0.0
    };
    if fps.is_nan() || fps <= 0.0 {
        return Err(EngineError::new(ErrorCode::Corrupt, "the video stream has no frame rate"));
    }
    if fps > limits.max_fps {
        return Err(EngineError::new(
            ErrorCode::UnsupportedFrameRate,
            format!("{fps:.1} fps exceeds {}", limits.max_fps),
        ));
    }
    let duration = input.duration();
    let container_duration_secs =
        if duration > 0 { duration as f64 / f64::from(ffi::AV_TIME_BASE) } else { 0.0 };
    let declared = stream_duration(video);
    let duration_secs = match declared {
        Some(secs) => secs,
        None if container_duration_secs > 0.0 => container_duration_secs,
        None => scanned_duration.unwrap_or(0.0),
    };
    if duration_secs.is_nan() || duration_secs <= 0.0 {
        return Err(EngineError::new(ErrorCode::Corrupt, "the duration is unknown"));
    }
    if duration_secs.max(container_duration_secs) > limits.max_duration_secs {
        return Err(EngineError::new(
            ErrorCode::TooLong,
            format!(
                "{:.0} s exceeds the limit of {:.0} s",
                duration_secs.max(container_duration_secs),
                limits.max_duration_secs
            ),
        ));
    }
    if display_width < MIN_DIMENSION || display_height < MIN_DIMENSION {
        return Err(EngineError::new(
            ErrorCode::TooSmallDimensions,
            format!(
                "{display_width}x{display_height} is smaller than {MIN_DIMENSION}x{MIN_DIMENSION}"
            ),
        ));
    }
    // The first audio stream whose codec is accepted; others (commentary tracks, exotic
    // codecs next to a usable one) are left out.
    let mut audios: Vec<_> =
        input.streams().filter(|s| s.parameters().medium() == Type::Audio).collect();
    audios.retain(|stream| {
        let keep = !outside(stream);
        if !keep {
            warnings.push(format!(
                "audio track {} was left out: its data is in another file (an external reference), not in the upload",
                stream.index()
            ));
        }
        keep
    });
    let usable: Vec<_> =
        audios.iter().filter(|s| is_accepted_audio(s.parameters().id().name())).collect();
    if usable.is_empty()
        && let Some(first) = audios.first()
    {
        return Err(EngineError::new(
            ErrorCode::UnsupportedCodec,
            format!("audio codec `{}` is not supported", first.parameters().id().name()),
        ));
    }
    for stream in audios.iter().filter(|s| !is_accepted_audio(s.parameters().id().name())) {
        warnings.push(format!(
            "audio track {} was left out: its codec `{}` is not supported",
            stream.index(),
            stream.parameters().id().name()
        ));
    }
    // The track the file flags as default leads (players start with it); else the first.
    let is_default = |stream: &ffmpeg::format::stream::Stream<'_>| {
        stream.disposition().contains(ffmpeg::format::stream::Disposition::DEFAULT)
    };
    let mut ordered = usable.clone();
    if let Some(at) = ordered.iter().position(|s| is_default(s)) {
        let default = ordered.remove(at);
        ordered.insert(0, default);
    }
    let audio_tracks: Vec<AudioTrack> = ordered
        .iter()
        .map(|stream| {
            let metadata = stream.metadata();
            AudioTrack {
                index: stream.index(),
                language: metadata.get("language").and_then(TrackLanguage::parse),
                title: metadata.get("title").and_then(TrackName::clean),
                default: is_default(stream),
            }
        })
        .collect();
    let usable = ordered.first();
    let mut subtitle_tracks = Vec::new();
    for stream in input.streams().filter(|s| s.parameters().medium() == Type::Subtitle) {
        let codec = stream.parameters().id().name().to_owned();
        if !is_text_subtitle(&codec) {
            warnings.push(format!(
                "subtitle track {} was left out: `{codec}` is a picture format, not text",
                stream.index()
            ));
            continue;
        }
        let metadata = stream.metadata();
        let disposition = stream.disposition();
        subtitle_tracks.push(SubtitleTrack {
            index: stream.index(),
            codec,
            language: metadata.get("language").and_then(TrackLanguage::parse),
            title: metadata.get("title").and_then(TrackName::clean),
            default: disposition.contains(ffmpeg::format::stream::Disposition::DEFAULT),
            forced: disposition.contains(ffmpeg::format::stream::Disposition::FORCED),
        });
    }
    let audio = usable.map(|stream| {
        let parameters = stream.parameters();
        // SAFETY: plain fields of the codec parameters.
        let (sample_rate, channels, bit_rate) = unsafe {
            let p = parameters.as_ptr();
            ((*p).sample_rate, (*p).ch_layout.nb_channels, (*p).bit_rate)
        };
        AudioInfo {
            index: stream.index(),
            codec: parameters.id().name().to_owned(),
            sample_rate: u32::try_from(sample_rate).unwrap_or(0),
            channels: u16::try_from(channels).unwrap_or(0),
            bit_rate: u64::try_from(bit_rate).ok().filter(|b| *b > 0),
        }
    });
    // Sound before the first picture is played over it held (see `MediaInfo::audio_lead_secs`).
    let start = |stream: &ffmpeg::format::stream::Stream<'_>| {
        let start = stream.start_time();
        (start != ffi::AV_NOPTS_VALUE).then(|| start as f64 * f64::from(stream.time_base()))
    };
    let audio_lead_secs = audio_lead_secs(start(video), usable.and_then(|a| start(a)), 1.0 / fps);
    let parameters = video.parameters();
    // SAFETY: plain fields of the codec parameters.
    let (video_bit_rate, field_order) =
        unsafe { ((*parameters.as_ptr()).bit_rate, (*parameters.as_ptr()).field_order) };
    let interlaced = !matches!(
        field_order,
        ffi::AVFieldOrder::AV_FIELD_UNKNOWN | ffi::AVFieldOrder::AV_FIELD_PROGRESSIVE
    );
    let pixel_format = ffmpeg::codec::context::Context::from_parameters(parameters)
        .and_then(|c| c.decoder().video())
        .ok()
        .and_then(|d| d.format().descriptor().map(|desc| desc.name().to_owned()))
        .unwrap_or_default();
    Ok(MediaInfo {
        format: input.format().name().to_owned(),
        duration_secs: duration_secs + audio_lead_secs,
        audio_lead_secs,
        container_duration_secs,
        video_duration_declared: declared.is_some(),
        bit_rate: u64::try_from(input.bit_rate()).ok().filter(|b| *b > 0),
        video: VideoInfo {
            index: video.index(),
            codec: video_codec,
            width,
            height,
            display_width,
            display_height,
            sample_aspect_ratio,
            orientation,
            interlaced,
            fps,
            bit_rate: u64::try_from(video_bit_rate).ok().filter(|b| *b > 0),
            pixel_format,
            colour: colour(&video.parameters()),
        },
        audio,
        audio_tracks,
        subtitle_tracks,
        streams: input.nb_streams() as usize,
        warnings,
    })
}

/// The stream's colour tags by FFmpeg's names (what ffprobe prints), unspecified ones left out.
fn colour(parameters: &ffmpeg::codec::Parameters) -> ColourInfo {
    use ffmpeg::color::{Primaries, Range, Space, TransferCharacteristic};
    // SAFETY: plain fields of the codec parameters.
    let (primaries, transfer, matrix, range) = unsafe {
        let p = parameters.as_ptr();
        ((*p).color_primaries, (*p).color_trc, (*p).color_space, (*p).color_range)
    };
    let named = |name: Option<&'static str>| {
        name.filter(|n| !matches!(*n, "unknown" | "unspecified" | "reserved")).map(str::to_owned)
    };
    ColourInfo {
        primaries: named(Primaries::from(primaries).name()),
        transfer: named(TransferCharacteristic::from(transfer).name()),
        matrix: named(Space::from(matrix).name()),
        range: named(Range::from(range).name()),
    }
}

/// The pixel aspect ratio when it is known and not square.
fn sample_aspect_ratio(stream: &ffmpeg::format::stream::Stream<'_>) -> Option<[u32; 2]> {
    // SAFETY: plain fields of the stream and its codec parameters.
    let (from_codec, from_stream) = unsafe {
        (
            (*stream.parameters().as_ptr()).sample_aspect_ratio,
            (*stream.as_ptr()).sample_aspect_ratio,
        )
    };
    [from_codec, from_stream]
        .into_iter()
        .find(|r| r.num > 0 && r.den > 0)
        .filter(|r| r.num != r.den)
        .map(|r| [r.num as u32, r.den as u32])
}

/// The display matrix of the stream, read as FFmpeg's `ffmpeg` tool reads it.
fn orientation(stream: &ffmpeg::format::stream::Stream<'_>) -> Orientation {
    use ffmpeg::codec::packet::side_data::Type as SideData;
    let Some(data) = stream.side_data().find(|d| d.kind() == SideData::DisplayMatrix) else {
        return Orientation::Upright;
    };
    let bytes = data.data();
    if bytes.len() < 36 {
        return Orientation::Upright;
    }
    let mut matrix = [0i32; 9];
    for (i, entry) in matrix.iter_mut().enumerate() {
        let mut word = [0u8; 4];
        word.copy_from_slice(&bytes[i * 4..i * 4 + 4]);
        *entry = i32::from_ne_bytes(word);
    }
    // SAFETY: `matrix` holds the nine entries av_display_rotation_get reads.
    let rotation = unsafe { ffi::av_display_rotation_get(matrix.as_ptr()) };
    if rotation.is_nan() {
        return Orientation::Upright;
    }
    Orientation::from_display_matrix(-rotation.round(), &matrix)
}

/// The stream's own duration: from its header, or the `DURATION` tag Matroska writers add per
/// stream. `None` when the container only knows its overall duration.
fn stream_duration(stream: &ffmpeg::format::stream::Stream<'_>) -> Option<f64> {
    let duration = stream.duration();
    if duration > 0 && duration != ffi::AV_NOPTS_VALUE {
        return Some(duration as f64 * f64::from(stream.time_base()));
    }
    let tag = stream.metadata().get("DURATION")?.to_owned();
    let mut secs = 0.0;
    for part in tag.split(':') {
        secs = secs * 60.0 + part.trim().parse::<f64>().ok()?;
    }
    (secs > 0.0).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A display matrix made by FFmpeg itself whose rotation `ffprobe` reports as `rotation`
    /// (`av_display_rotation_get`; the setter takes the opposite sign), then optional flips.
    fn matrix(rotation: f64, hflip: bool, vflip: bool) -> (f64, [i32; 9]) {
        let mut m = [0i32; 9];
        // SAFETY: the FFmpeg helpers write the nine entries of `m`.
        let theta = unsafe {
            ffmpeg_next::ffi::av_display_rotation_set(m.as_mut_ptr(), -rotation);
            ffmpeg_next::ffi::av_display_matrix_flip(
                m.as_mut_ptr(),
                i32::from(hflip),
                i32::from(vflip),
            );
            -ffmpeg_next::ffi::av_display_rotation_get(m.as_ptr()).round()
        };
        (theta, m)
    }

    fn orientation(angle: f64, hflip: bool, vflip: bool) -> Orientation {
        let (theta, m) = matrix(angle, hflip, vflip);
        Orientation::from_display_matrix(theta, &m)
    }

    #[test]
    fn display_matrices_map_to_the_transform_ffmpeg_applies() {
        assert_eq!(orientation(0.0, false, false), Orientation::Upright);
        // ffprobe "rotation: -90": the usual portrait phone file, turned clockwise to show.
        assert_eq!(orientation(-90.0, false, false), Orientation::Clockwise);
        assert_eq!(orientation(90.0, false, false), Orientation::CounterClockwise);
        assert_eq!(orientation(180.0, false, false), Orientation::UpsideDown);
        assert_eq!(orientation(270.0, false, false), Orientation::Clockwise);
        assert_eq!(orientation(-270.0, false, false), Orientation::CounterClockwise);
        assert_eq!(orientation(0.0, true, false), Orientation::MirroredHorizontally);
        assert_eq!(orientation(0.0, false, true), Orientation::MirroredVertically);
        let flipped = orientation(-90.0, true, false);
        assert!(
            matches!(flipped, Orientation::ClockwiseFlipped | Orientation::CounterClockwiseFlipped),
            "{flipped:?}"
        );
        assert!(flipped.swaps_axes());
    }
}
