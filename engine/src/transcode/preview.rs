//! The animated preview (`preview` output): a few seconds of the title as a looping animated
//! WebP (`thumbs/preview.webp`), from the pictures the pipeline decodes anyway — like the
//! storyboard's, a split title's chunks each keep the ones due in their range for the stitch.

use std::path::Path;

use ffmpeg_next::format::Pixel;
use ffmpeg_next::software::scaling;
use ffmpeg_next::{Dictionary, Packet, Rational, codec, encoder, frame};

use tcoder::engine::plan::PreviewPlan;
use tcoder::engine::{EngineError, ErrorCode};

/// The preview's file under `thumbs/`.
pub(crate) const PREVIEW_FILE: &str = "preview.webp";
/// libwebp's quality (0-100) for the preview's pictures.
const QUALITY: &str = "70";

pub(crate) struct Preview {
    plan: PreviewPlan,
    /// Pictures from index `first` on (full-range YUV 4:2:0, at the preview's size).
    pictures: Vec<frame::Video>,
    first: u32,
    /// The last index this part may fill (exclusive).
    limit: u32,
}

impl Preview {
    /// The preview's pictures due in `[from_secs, until_secs)` of the title.
    pub(crate) fn for_range(
        plan: &PreviewPlan,
        from_secs: f64,
        until_secs: Option<f64>,
    ) -> Preview {
        let step = 1.0 / f64::from(plan.fps.max(1));
        let index_at = |secs: f64| ((secs - plan.start_secs - 1e-3) / step).ceil().max(0.0) as u32;
        let first = index_at(from_secs).min(plan.frames);
        let limit = until_secs.map_or(plan.frames, |until| index_at(until).min(plan.frames));
        Preview { plan: plan.clone(), pictures: Vec::new(), first, limit: limit.max(first) }
    }

    fn next(&self) -> u32 {
        self.first + self.pictures.len() as u32
    }

    /// Whether a picture shown at `seconds` is wanted.
    pub(crate) fn due(&self, seconds: f64) -> bool {
        self.next() < self.limit && seconds + 1e-3 >= self.plan.time_of(self.next())
    }

    /// Keeps `frame` (shown at `seconds`) for every picture due by then; a source slower than
    /// the preview's rate repeats its pictures.
    pub(crate) fn take(&mut self, frame: &frame::Video, seconds: f64) -> Result<(), EngineError> {
        while self.due(seconds) {
            let picture = match self.pictures.last() {
                Some(previous) if seconds + 1e-3 >= self.plan.time_of(self.next() + 1) => {
                    previous.clone()
                }
                _ => super::picture::scale(frame, self.plan.width, self.plan.height)?,
            };
            self.pictures.push(picture);
        }
        Ok(())
    }

    /// A chunk's share, raw: `preview_<i>.yuv` for each picture it kept.
    pub(crate) fn write_part(&self, dir: &Path) -> Result<(), EngineError> {
        for (n, picture) in self.pictures.iter().enumerate() {
            let name = format!("preview_{}.yuv", self.first + n as u32);
            std::fs::write(dir.join(name), super::picture::raw(picture))
                .map_err(|e| crate::error::disk(&e))?;
        }
        Ok(())
    }

    /// The whole preview from the chunks' shares in `dirs`: each picture from the chunk that
    /// kept it; one no chunk kept repeats the one before it.
    pub(crate) fn from_parts(plan: &PreviewPlan, dirs: &[&Path]) -> Result<Preview, EngineError> {
        let mut preview = Preview::for_range(plan, 0.0, None);
        for i in 0..plan.frames {
            let found =
                dirs.iter().map(|d| d.join(format!("preview_{i}.yuv"))).find(|p| p.is_file());
            let picture = match found {
                Some(path) => super::picture::from_raw(&path, plan.width, plan.height)?,
                None => match preview.pictures.last() {
                    Some(previous) => previous.clone(),
                    None => continue,
                },
            };
            preview.pictures.push(picture);
        }
        Ok(preview)
    }

    /// Writes the looping animated WebP into `dir` (`false`: no picture was decoded).
    pub(crate) fn finish(self, dir: &Path) -> Result<bool, EngineError> {
        if self.pictures.is_empty() {
            return Ok(false);
        }
        write_webp(&self.pictures, self.plan.fps, &dir.join(PREVIEW_FILE))?;
        Ok(true)
    }
}

/// Encodes `pictures` (`fps` a second, looping) with libwebp's animation encoder.
fn write_webp(pictures: &[frame::Video], fps: u32, path: &Path) -> Result<(), EngineError> {
    let failed = |what: &str, e: ffmpeg_next::Error| crate::error::output(what, &e);
    let codec = encoder::find_by_name("libwebp_anim")
        .ok_or_else(|| EngineError::new(ErrorCode::Failed, "no animated WebP encoder (libwebp)"))?;
    let (width, height) = (pictures[0].width(), pictures[0].height());
    let rate = Rational::new(1, i32::try_from(fps.max(1)).unwrap_or(10));
    let mut output =
        ffmpeg_next::format::output_as(&path, "webp").map_err(|e| failed("preview file", e))?;
    let mut context = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| failed("preview encoder", e))?;
    context.set_width(width);
    context.set_height(height);
    context.set_format(Pixel::YUV420P);
    context.set_time_base(rate);
    let mut options = Dictionary::new();
    options.set("quality", QUALITY);
    let mut encoder =
        context.open_as_with(codec, options).map_err(|e| failed("open preview encoder", e))?;
    let mut stream = output.add_stream_with(&encoder).map_err(|e| failed("preview stream", e))?;
    stream.set_time_base(rate);
    // The muxer's `loop`: 0 plays it forever.
    let mut forever = Dictionary::new();
    forever.set("loop", "0");
    output.write_header_with(forever).map_err(|e| failed("preview header", e))?;
    let stream_base = output.stream(0).map_or(rate, |s| s.time_base());
    // libwebp takes limited-range YUV: the full-range thumbnails are converted.
    let mut convert = scaling::Context::get(
        Pixel::YUVJ420P,
        width,
        height,
        Pixel::YUV420P,
        width,
        height,
        scaling::Flags::BICUBIC,
    )
    .map_err(|e| failed("preview scaler", e))?;
    let drain = |encoder: &mut encoder::Video,
                 output: &mut ffmpeg_next::format::context::Output|
     -> Result<(), EngineError> {
        let mut packet = Packet::empty();
        while encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(0);
            packet.rescale_ts(rate, stream_base);
            packet.write_interleaved(output).map_err(|e| failed("write preview", e))?;
        }
        Ok(())
    };
    for (n, picture) in pictures.iter().enumerate() {
        let mut converted = frame::Video::new(Pixel::YUV420P, width, height);
        convert.run(picture, &mut converted).map_err(|e| failed("convert preview", e))?;
        converted.set_pts(Some(n as i64));
        encoder.send_frame(&converted).map_err(|e| failed("encode preview", e))?;
        drain(&mut encoder, &mut output)?;
    }
    encoder.send_eof().map_err(|e| failed("encode preview", e))?;
    drain(&mut encoder, &mut output)?;
    output.write_trailer().map_err(|e| failed("preview trailer", e))
}
