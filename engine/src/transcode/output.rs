//! Output files of one rendition (an MP4 and/or an HLS playlist with fMP4 segments). Encoded
//! packets are written to every output of the rendition: encoding happens once.

use std::ffi::CString;
use std::path::Path;
use std::ptr;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;
use ffmpeg_next::format::context::Output;
use ffmpeg_next::{Dictionary, Packet, Rational};

use tcoder::engine::{EngineError, ErrorCode};

/// Which stream of a muxer a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Track {
    Video,
    Audio,
}

/// One output file (or playlist) being written.
pub(crate) struct Muxer {
    context: Output,
    header_options: Vec<(&'static str, String)>,
    video: usize,
    audio: Option<usize>,
    /// Added to every timestamp written (seconds): see [`Muxer::delay_by`].
    delay_secs: f64,
}

impl Muxer {
    /// Allocates a muxer for `format` at `path`; opens the file only when the muxer writes one
    /// itself (the HLS muxer opens its playlist and segments on its own).
    pub(crate) fn create(
        path: &Path,
        format: &str,
        header_options: Vec<(&'static str, String)>,
    ) -> Result<Muxer, EngineError> {
        let fail = |what: &str, e: i32| crate::error::output(what, &ffmpeg::Error::from(e));
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| EngineError::new(ErrorCode::Failed, "bad path"))?;
        let c_format = CString::new(format).expect("no NUL");
        let mut context: *mut ffi::AVFormatContext = ptr::null_mut();
        // SAFETY: standard allocation of an output context; ownership moves into `Output`.
        unsafe {
            let allocated = ffi::avformat_alloc_output_context2(
                &mut context,
                ptr::null_mut(),
                c_format.as_ptr(),
                c_path.as_ptr(),
            );
            if allocated < 0 {
                return Err(fail("allocate output", allocated));
            }
            let no_file = (*(*context).oformat).flags & ffi::AVFMT_NOFILE != 0;
            if !no_file {
                let opened =
                    ffi::avio_open(&mut (*context).pb, c_path.as_ptr(), ffi::AVIO_FLAG_WRITE);
                if opened < 0 {
                    ffi::avformat_free_context(context);
                    return Err(fail("open output file", opened));
                }
            }
            Ok(Muxer {
                context: Output::wrap(context),
                header_options,
                video: 0,
                audio: None,
                delay_secs: 0.0,
            })
        }
    }

    /// Adds a stream carrying what `encoder` produces; returns nothing (the track is remembered).
    pub(crate) fn add_stream(
        &mut self,
        track: Track,
        encoder: &ffmpeg::codec::Context,
        codec_tag: Option<[u8; 4]>,
    ) -> Result<(), EngineError> {
        let mut stream = self
            .context
            .add_stream_with(encoder)
            .map_err(|e| crate::error::output("add stream", &e))?;
        if let Some(tag) = codec_tag {
            // SAFETY: plain field of the new stream's parameters.
            unsafe {
                (*stream.parameters().as_mut_ptr()).codec_tag = u32::from_le_bytes(tag);
            }
        }
        stream.set_time_base(encoder.time_base());
        let index = stream.index();
        match track {
            Track::Video => self.video = index,
            Track::Audio => self.audio = Some(index),
        }
        Ok(())
    }

    /// Adds a stream copied from an input stream (copy mode), with the source's display
    /// matrix so players still show it upright.
    pub(crate) fn add_copied_stream(
        &mut self,
        track: Track,
        parameters: ffmpeg::codec::Parameters,
        time_base: Rational,
        display_matrix: Option<&[u8]>,
    ) -> Result<(), EngineError> {
        let mut stream = self
            .context
            .add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::None))
            .map_err(|e| crate::error::output("add stream", &e))?;
        let hevc = parameters.id() == ffmpeg::codec::Id::HEVC;
        stream.set_parameters(parameters);
        // SAFETY: plain field; a tag from another container may not be valid in MP4. HEVC is
        // tagged `hvc1` (parameter sets in the sample entry), which Apple's players require:
        // the muxer's default, `hev1`, made an iPhone's own video unplayable on an iPhone.
        // The other codecs' defaults (`avc1`, `av01`, `vp09`, `mp4a`, `Opus`) play everywhere.
        unsafe {
            (*stream.parameters().as_mut_ptr()).codec_tag =
                if hevc { u32::from_le_bytes(*b"hvc1") } else { 0 };
        }
        stream.set_time_base(time_base);
        if let Some(matrix) = display_matrix {
            // SAFETY: av_stream_new_side_data allocates `matrix.len()` bytes owned by the
            // stream; we fill exactly that many.
            unsafe {
                let data = ffi::av_stream_new_side_data(
                    stream.as_mut_ptr(),
                    ffi::AVPacketSideDataType::AV_PKT_DATA_DISPLAYMATRIX,
                    matrix.len(),
                );
                if data.is_null() {
                    return Err(EngineError::new(ErrorCode::Memory, "display matrix"));
                }
                ptr::copy_nonoverlapping(matrix.as_ptr(), data, matrix.len());
            }
        }
        let index = stream.index();
        match track {
            Track::Video => self.video = index,
            Track::Audio => self.audio = Some(index),
        }
        Ok(())
    }

    /// Moves everything written by `secs`: later for a split title's items (to where the
    /// whole-title encode's muxer puts its streams), earlier for an MP4 remuxed from them.
    pub(crate) fn delay_by(&mut self, secs: f64) {
        self.delay_secs = secs;
    }

    pub(crate) fn write_header(&mut self) -> Result<(), EngineError> {
        let mut options = Dictionary::new();
        for (key, value) in &self.header_options {
            options.set(key, value);
        }
        self.context
            .write_header_with(options)
            .map(|_| ())
            .map_err(|e| crate::error::output("write header", &e))
    }

    /// Writes a copy of `packet` (timestamps in `time_base`) to `track`.
    pub(crate) fn write(
        &mut self,
        track: Track,
        packet: &Packet,
        time_base: Rational,
    ) -> Result<(), EngineError> {
        let index = match track {
            Track::Video => self.video,
            Track::Audio => match self.audio {
                Some(index) => index,
                None => return Ok(()),
            },
        };
        let target = self.context.stream(index).map(|s| s.time_base()).unwrap_or(time_base);
        let mut copy = packet.clone();
        copy.set_stream(index);
        copy.rescale_ts(time_base, target);
        if self.delay_secs != 0.0 {
            let delay = (self.delay_secs / f64::from(target)).round() as i64;
            copy.set_pts(copy.pts().map(|pts| pts + delay));
            copy.set_dts(copy.dts().map(|dts| dts + delay));
        }
        copy.set_position(-1);
        copy.write_interleaved(&mut self.context)
            .map_err(|e| crate::error::output("write packet", &e))
    }

    pub(crate) fn finish(&mut self) -> Result<(), EngineError> {
        self.context.write_trailer().map_err(|e| crate::error::output("write trailer", &e))
    }
}

/// Header options of a faststart MP4 (the index at the front, so playback starts at once).
pub(crate) fn mp4_options() -> Vec<(&'static str, String)> {
    vec![("movflags", "+faststart".to_owned())]
}

/// Header options of an HLS VOD rendition with fMP4 segments in `dir`. A chunk of a split job
/// (`first_segment` given) numbers its segments from there and writes each fragment's decode
/// time as is (`frag_discont`), not relative to its own first frame: its segments then join
/// the other chunks' under one initialization segment.
pub(crate) fn hls_options(
    dir: &Path,
    segment_secs: f64,
    chunk_first_segment: Option<u32>,
) -> Vec<(&'static str, String)> {
    let mut options = vec![
        ("hls_time", format!("{segment_secs}")),
        ("hls_playlist_type", "vod".to_owned()),
        ("hls_list_size", "0".to_owned()),
        ("hls_segment_type", "fmp4".to_owned()),
        ("hls_fmp4_init_filename", "init.mp4".to_owned()),
        ("hls_segment_filename", dir.join("seg_%05d.m4s").display().to_string()),
        ("hls_flags", "independent_segments".to_owned()),
    ];
    if let Some(first_segment) = chunk_first_segment {
        options.push(("start_number", first_segment.to_string()));
        options.push(("hls_segment_options", "movflags=+frag_discont".to_owned()));
    }
    options
}
