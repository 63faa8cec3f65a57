//! Caption tracks inside the MP4s, as MP4 timed text (`mov_text`, 3GPP TS 26.245 `tx3g`), for
//! players that read captions from the file itself (`QuickTime`, Safari, VLC, TVs) rather than
//! from a WebVTT `<track>` beside it. Asked for with the job's `mp4_captions`.
//!
//! Done as a remux of each finished MP4 (every packet copied, the text tracks added): the
//! cues are only known once the whole title is read, and a remux costs a fraction of a second
//! beside the encode. Samples are written directly — a 16-bit length and the UTF-8 text — with
//! the sample description FFmpeg's own `mov_text` encoder writes; the muxer fills the gaps
//! between cues with empty samples, as the format wants.

use std::path::Path;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;
use ffmpeg_next::{Dictionary, Rational, format};

use tcoder::engine::EngineError;
use tcoder::engine::plan::CaptionPlan;

use super::captions::Cue;

/// Timed text's clock: milliseconds.
const TEXT_TIME_BASE: Rational = Rational(1, 1000);

/// The `tx3g` sample description FFmpeg's `mov_text` encoder writes by default: no display
/// flags, centred at the bottom, transparent background, no text box, one style (font 1,
/// 18 px, white), one font ("Serif").
const SAMPLE_ENTRY: [u8; 48] = [
    0, 0, 0, 0, // display flags
    0x01, 0xFF, // horizontal centre, vertical bottom
    0, 0, 0, 0, // background RGBA
    0, 0, 0, 0, 0, 0, 0, 0, // text box (top, left, bottom, right)
    0, 0, 0, 0, 0, 1, 0, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, // style record
    0, 0, 0, 0x12, b'f', b't', b'a', b'b', 0, 1, // font table: one entry
    0, 1, 5, b'S', b'e', b'r', b'i', b'f', // font 1: "Serif"
];

/// Adds `tracks` to every MP4 rendition of `plan` in `out`.
pub(crate) fn add_to_renditions(
    out: &Path,
    plan: &tcoder::engine::plan::EnginePlan,
    tracks: &[(CaptionPlan, Vec<Cue>)],
) -> Result<(), EngineError> {
    for rendition in &plan.renditions {
        add_tracks(&out.join("mp4").join(format!("{}.mp4", rendition.name)), tracks)?;
    }
    Ok(())
}

/// Adds `tracks` to the MP4 at `path` as timed text, in place.
pub(crate) fn add_tracks(
    path: &Path,
    tracks: &[(CaptionPlan, Vec<Cue>)],
) -> Result<(), EngineError> {
    if tracks.is_empty() {
        return Ok(());
    }
    let failed = |what: &str, e: ffmpeg::Error| crate::error::output(what, &e);
    let staged = path.with_extension("text.mp4");
    let mut input = format::input(&path).map_err(|e| failed("reopen MP4", e))?;
    let mut output = format::output_as(&staged, "mp4").map_err(|e| failed("MP4 for text", e))?;
    output.set_metadata(input.metadata().to_owned());
    let mut time_bases = Vec::new();
    for stream in input.streams() {
        let mut copy = output.add_stream(None).map_err(|e| failed("copy stream", e))?;
        copy.set_parameters(stream.parameters());
        copy.set_time_base(stream.time_base());
        copy.set_avg_frame_rate(stream.avg_frame_rate());
        copy.set_rate(stream.rate());
        copy.set_metadata(stream.metadata().to_owned());
        // SAFETY: both streams are valid for the calls; side data is copied into buffers the
        // output stream owns (av_stream_new_side_data allocates them).
        unsafe {
            (*copy.as_mut_ptr()).disposition = (*stream.as_ptr()).disposition;
            copy_side_data(stream.as_ptr(), copy.as_mut_ptr());
        }
        time_bases.push(stream.time_base());
    }
    let first_text = time_bases.len();
    for (plan, _) in tracks {
        let mut text = output.add_stream(None).map_err(|e| failed("text stream", e))?;
        text.set_time_base(TEXT_TIME_BASE);
        let mut metadata = Dictionary::new();
        if let Some(code) = plan.language.as_ref().and_then(|l| l.three_letter()) {
            metadata.set("language", code);
        }
        metadata.set("handler_name", plan.name.as_str());
        text.set_metadata(metadata);
        // SAFETY: the stream's codec parameters are ours to fill; the extradata buffer is
        // allocated with FFmpeg's allocator (padded) and owned by the parameters from here.
        unsafe {
            let parameters = (*text.as_mut_ptr()).codecpar;
            (*parameters).codec_type = ffi::AVMediaType::AVMEDIA_TYPE_SUBTITLE;
            (*parameters).codec_id = ffi::AVCodecID::AV_CODEC_ID_MOV_TEXT;
            let padded = SAMPLE_ENTRY.len() + ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
            let extradata = ffi::av_mallocz(padded).cast::<u8>();
            if extradata.is_null() {
                let enomem = ffmpeg::Error::Other { errno: ffmpeg::util::error::ENOMEM };
                return Err(crate::error::output("text stream", &enomem));
            }
            std::ptr::copy_nonoverlapping(SAMPLE_ENTRY.as_ptr(), extradata, SAMPLE_ENTRY.len());
            (*parameters).extradata = extradata;
            (*parameters).extradata_size = SAMPLE_ENTRY.len() as i32;
            let mut disposition = 0;
            if plan.default {
                disposition |= ffi::AV_DISPOSITION_DEFAULT;
            }
            if plan.forced {
                disposition |= ffi::AV_DISPOSITION_FORCED;
            }
            (*text.as_mut_ptr()).disposition = disposition;
        }
    }
    let mut options = Dictionary::new();
    options.set("movflags", "+faststart");
    output.write_header_with(options).map_err(|e| failed("MP4 header", e))?;
    // Cue packets, merged into the copied packets in time order.
    let mut cues: Vec<(f64, usize, &Cue)> = tracks
        .iter()
        .enumerate()
        .flat_map(|(n, (_, cues))| cues.iter().map(move |cue| (cue.start, first_text + n, cue)))
        .collect();
    cues.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut cues = cues.into_iter().peekable();
    for (stream, mut packet) in input.packets() {
        let index = stream.index();
        let at = packet.dts().or(packet.pts()).unwrap_or(0);
        let at_secs = at as f64 * f64::from(time_bases[index]);
        while let Some((_, track, cue)) = cues.next_if(|(start, ..)| *start <= at_secs) {
            write_cue(&mut output, track, cue)?;
        }
        let to = output.stream(index).expect("copied stream").time_base();
        packet.rescale_ts(time_bases[index], to);
        packet.set_position(-1);
        packet.set_stream(index);
        packet.write_interleaved(&mut output).map_err(|e| failed("copy packet", e))?;
    }
    for (_, track, cue) in cues {
        write_cue(&mut output, track, cue)?;
    }
    output.write_trailer().map_err(|e| failed("MP4 trailer", e))?;
    drop(output);
    drop(input);
    std::fs::rename(&staged, path).map_err(|e| crate::error::disk(&e))
}

/// One cue as a timed-text sample: its length (16 bits, big-endian) and its UTF-8 text.
fn write_cue(
    output: &mut format::context::Output,
    track: usize,
    cue: &Cue,
) -> Result<(), EngineError> {
    let text = plain_text(&cue.text);
    let bytes = text.as_bytes();
    let length = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut sample = Vec::with_capacity(2 + usize::from(length));
    sample.extend_from_slice(&length.to_be_bytes());
    sample.extend_from_slice(&bytes[..usize::from(length)]);
    let mut packet = ffmpeg::Packet::copy(&sample);
    let start = (cue.start * 1000.0).round() as i64;
    let end = ((cue.end * 1000.0).round() as i64).max(start + 1);
    packet.set_pts(Some(start));
    packet.set_dts(Some(start));
    packet.set_duration(end - start);
    packet.set_stream(track);
    let to = output.stream(track).expect("text stream").time_base();
    packet.rescale_ts(TEXT_TIME_BASE, to);
    packet.write_interleaved(output).map_err(|e| crate::error::output("text sample", &e))
}

/// WebVTT cue text back to plain text (timed text has no markup to escape).
fn plain_text(vtt: &str) -> String {
    vtt.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// Copies every side data entry of `from` (display matrix, HDR mastering and light levels)
/// onto `to`.
///
/// # Safety
/// Both must be valid streams; `to` not yet written.
unsafe fn copy_side_data(from: *const ffi::AVStream, to: *mut ffi::AVStream) {
    // SAFETY: per the function's contract; each entry's data is `size` bytes.
    unsafe {
        for n in 0..(*from).nb_side_data.max(0) as usize {
            let entry = &*(*from).side_data.add(n);
            let copy = ffi::av_stream_new_side_data(to, entry.type_, entry.size);
            if !copy.is_null() {
                std::ptr::copy_nonoverlapping(entry.data, copy, entry.size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_carry_plain_text() {
        assert_eq!(plain_text("a &lt;b&gt; &amp;amp;"), "a <b> &amp;");
    }

    #[test]
    fn the_sample_entry_is_what_ffmpegs_encoder_writes() {
        // The font table box's size is its own 18 bytes.
        assert_eq!(&SAMPLE_ENTRY[30..34], &[0, 0, 0, 0x12]);
        assert_eq!(SAMPLE_ENTRY.len() - 30, 0x12);
    }
}
