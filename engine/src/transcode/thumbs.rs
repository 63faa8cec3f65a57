//! Thumbnails from the frames the pipeline decodes anyway: a poster JPEG and a storyboard
//! sprite (a grid of small tiles) with a WebVTT file mapping time ranges to tiles
//! (`storyboard.jpg#xywh=x,y,w,h`), the format players use for seek previews; and each tile's
//! picture at a larger size (`frames/<i>.jpg`, described by `frames.json`), which the API
//! scales to the width an app asks for at any time of the title.

use std::fmt::Write as _;
use std::path::Path;

use ffmpeg_next::format::Pixel;
use ffmpeg_next::{Dictionary, Packet, Rational, codec, encoder, frame};

use tcoder::engine::plan::ThumbnailPlan;

use super::picture::{from_raw, raw, scale};
use super::preview::{PREVIEW_FILE, Preview};
use tcoder::engine::{EngineError, ErrorCode};

/// The frames' index, beside them in `thumbs/`.
pub(crate) const FRAMES_INDEX: &str = "frames.json";

/// JPEG quality scale of FFmpeg's MJPEG encoder (2 best .. 31 worst).
const JPEG_QUALITY: i32 = 4;

pub(crate) struct Thumbnails {
    plan: ThumbnailPlan,
    poster: Option<frame::Video>,
    /// Tiles from index `first_tile` on, at the frame size (the sprite's tiles are scaled
    /// down from them).
    tiles: Vec<frame::Video>,
    first_tile: u32,
    /// A chunk of a split title sees only `[from, until)`: it keeps the poster and the tiles
    /// due in it, for the stitch to assemble ([`Thumbnails::write_part`]).
    from_secs: f64,
    until_secs: Option<f64>,
    /// Tone mapping for the frames taken, when the renditions keep HDR (JPEGs are SDR).
    tone_map: Option<super::normalize::Normalizer>,
    /// The animated preview's pictures, when asked for.
    preview: Option<Preview>,
}

impl Thumbnails {
    pub(crate) fn new(plan: &ThumbnailPlan) -> Thumbnails {
        Thumbnails::for_range(plan, 0.0, None)
    }

    /// Thumbnails of the part `[from_secs, until_secs)` of the title.
    pub(crate) fn for_range(
        plan: &ThumbnailPlan,
        from_secs: f64,
        until_secs: Option<f64>,
    ) -> Thumbnails {
        let interval = plan.interval_secs.max(1e-3);
        let first_tile = ((from_secs - 1e-3) / interval).ceil().max(0.0) as u32;
        Thumbnails {
            plan: plan.clone(),
            poster: None,
            tiles: Vec::new(),
            first_tile,
            from_secs,
            until_secs,
            tone_map: None,
            preview: plan.preview.as_ref().map(|p| Preview::for_range(p, from_secs, until_secs)),
        }
    }

    /// These thumbnails, taken from HDR pictures through `tone_map`.
    pub(crate) fn tone_mapped(self, tone_map: super::normalize::Normalizer) -> Thumbnails {
        Thumbnails { tone_map: Some(tone_map), ..self }
    }

    fn poster_due(&self, seconds: f64) -> bool {
        let poster_here = self.plan.poster_at_secs + 1e-3 >= self.from_secs
            && self.until_secs.is_none_or(|u| self.plan.poster_at_secs < u);
        poster_here && self.poster.is_none() && seconds + 1e-3 >= self.plan.poster_at_secs
    }

    fn tile_due(&self, seconds: f64) -> bool {
        self.next_tile() < self.tile_limit()
            && seconds + 1e-3 >= f64::from(self.next_tile()) * self.plan.interval_secs
    }

    /// Index of the next tile this part is due to fill.
    fn next_tile(&self) -> u32 {
        self.first_tile + self.tiles.len() as u32
    }

    /// The last tile index this part may fill (exclusive): tiles due before its end.
    fn tile_limit(&self) -> u32 {
        match self.until_secs {
            Some(until) => (((until - 1e-3) / self.plan.interval_secs.max(1e-3)).floor() as u32
                + 1)
            .min(self.plan.tiles),
            None => self.plan.tiles,
        }
    }

    /// Offers a decoded frame at `seconds`; keeps it if a poster or tile is due.
    pub(crate) fn offer(&mut self, frame: &frame::Video, seconds: f64) -> Result<(), EngineError> {
        let preview_due = self.preview.as_ref().is_some_and(|p| p.due(seconds));
        if !self.poster_due(seconds) && !self.tile_due(seconds) && !preview_due {
            return Ok(());
        }
        let Some(mut tone_map) = self.tone_map.take() else {
            return self.take(frame, seconds);
        };
        // The filter graph takes over what it is given: a new reference to the picture, which
        // the renditions still need after this.
        let mut reference = frame::Video::empty();
        // SAFETY: av_frame_ref makes `reference` (empty, ours) a new reference to `frame`'s
        // buffers with its properties; both frames stay valid and independent.
        let referenced =
            unsafe { ffmpeg_next::ffi::av_frame_ref(reference.as_mut_ptr(), frame.as_ptr()) };
        if referenced < 0 {
            return Err(crate::error::output("tone map", &ffmpeg_next::Error::from(referenced)));
        }
        // Tone mapping has no delay: each picture pushed comes out before `push` returns.
        let mut mapped = None;
        let pushed = tone_map.push(&reference, &mut |picture| {
            mapped = Some(picture.clone());
            Ok(())
        });
        self.tone_map = Some(tone_map);
        pushed?;
        match mapped {
            Some(picture) => self.take(&picture, seconds),
            None => Ok(()),
        }
    }

    /// Keeps `frame` as the poster and/or the tiles due at `seconds`.
    fn take(&mut self, frame: &frame::Video, seconds: f64) -> Result<(), EngineError> {
        if self.poster_due(seconds) {
            self.poster = Some(scale(frame, self.plan.poster_width, self.plan.poster_height)?);
        }
        if let Some(preview) = &mut self.preview {
            preview.take(frame, seconds)?;
        }
        while self.tile_due(seconds) {
            let tile = match self.tiles.last() {
                // Frames can be further apart than the interval: repeat instead of rescaling.
                Some(previous)
                    if seconds + 1e-3
                        >= f64::from(self.next_tile() + 1) * self.plan.interval_secs =>
                {
                    previous.clone()
                }
                _ => scale(frame, self.plan.frame_width, self.plan.frame_height)?,
            };
            self.tiles.push(tile);
        }
        Ok(())
    }

    /// A chunk's share, written raw (no JPEG generation loss before the stitch encodes the
    /// sprite): `tile_<i>.yuv` for each tile it filled, `poster.yuv` if the poster fell in it.
    pub(crate) fn write_part(&self, dir: &Path) -> Result<(), EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| crate::error::disk(&e))?;
        let write = |frame: &frame::Video, name: String| {
            std::fs::write(dir.join(name), raw(frame)).map_err(|e| crate::error::disk(&e))
        };
        for (n, tile) in self.tiles.iter().enumerate() {
            write(tile, format!("tile_{}.yuv", self.first_tile + n as u32))?;
        }
        if let Some(poster) = &self.poster {
            write(poster, "poster.yuv".to_owned())?;
        }
        match &self.preview {
            Some(preview) => preview.write_part(dir),
            None => Ok(()),
        }
    }

    /// The whole title's thumbnails from the chunks' shares in `dirs` (title order): each tile
    /// from the chunk that filled it, a tile no chunk filled repeats the one before it.
    pub(crate) fn from_parts(
        plan: &ThumbnailPlan,
        dirs: &[&Path],
    ) -> Result<Thumbnails, EngineError> {
        let mut thumbnails = Thumbnails::new(plan);
        for i in 0..plan.tiles {
            let found = dirs.iter().map(|d| d.join(format!("tile_{i}.yuv"))).find(|p| p.is_file());
            let tile = match found {
                Some(path) => from_raw(&path, plan.frame_width, plan.frame_height)?,
                None => match thumbnails.tiles.last() {
                    Some(previous) => previous.clone(),
                    None => break,
                },
            };
            thumbnails.tiles.push(tile);
        }
        if let Some(path) = dirs.iter().map(|d| d.join("poster.yuv")).find(|p| p.is_file()) {
            thumbnails.poster = Some(from_raw(&path, plan.poster_width, plan.poster_height)?);
        }
        if let Some(preview) = &plan.preview {
            thumbnails.preview = Some(Preview::from_parts(preview, dirs)?);
        }
        Ok(thumbnails)
    }

    /// Writes `poster.jpg`, `storyboard.jpg`, `storyboard.vtt`, `frames/<i>.jpg`,
    /// `frames.json` (and `preview.webp` when asked for) into `dir`; the files the report
    /// names, under `thumbs/`.
    pub(crate) fn finish(
        mut self,
        dir: &Path,
        duration_secs: f64,
    ) -> Result<Vec<String>, EngineError> {
        let Some(first) = self.tiles.first().cloned() else {
            return Err(EngineError::new(
                ErrorCode::Corrupt,
                "no video frame could be decoded for thumbnails",
            ));
        };
        while (self.tiles.len() as u32) < self.plan.tiles {
            let last = self.tiles.last().cloned().unwrap_or_else(|| first.clone());
            self.tiles.push(last);
        }
        let poster = match self.poster.take() {
            Some(poster) => poster,
            None => scale(
                &self.tiles[self.tiles.len() - 1],
                self.plan.poster_width,
                self.plan.poster_height,
            )?,
        };
        std::fs::create_dir_all(dir).map_err(|e| crate::error::disk(&e))?;
        write_jpeg(&poster, &dir.join("poster.jpg"))?;
        let sprite = self.sprite()?;
        write_jpeg(&sprite, &dir.join("storyboard.jpg"))?;
        std::fs::write(dir.join("storyboard.vtt"), self.vtt(duration_secs))
            .map_err(|e| crate::error::disk(&e))?;
        let frames = dir.join("frames");
        std::fs::create_dir_all(&frames).map_err(|e| crate::error::disk(&e))?;
        for (i, tile) in self.tiles.iter().enumerate() {
            write_jpeg(tile, &frames.join(format!("{i}.jpg")))?;
        }
        let index = tcoder::engine::ThumbnailFrames {
            interval_secs: self.plan.interval_secs,
            count: self.plan.tiles,
            width: self.plan.frame_width,
            height: self.plan.frame_height,
            duration_secs,
        };
        let json = serde_json::to_vec(&index).expect("the frame index serializes");
        std::fs::write(dir.join(FRAMES_INDEX), json).map_err(|e| crate::error::disk(&e))?;
        let mut files = vec!["poster.jpg", "storyboard.jpg", "storyboard.vtt", FRAMES_INDEX];
        if let Some(preview) = self.preview.take()
            && preview.finish(dir)?
        {
            files.push(PREVIEW_FILE);
        }
        Ok(files.into_iter().map(|f| format!("thumbs/{f}")).collect())
    }

    fn rows(&self) -> u32 {
        self.plan.tiles.div_ceil(self.plan.columns.max(1))
    }

    /// All tiles on one full-range YUV 4:2:0 frame, row by row.
    fn sprite(&self) -> Result<frame::Video, EngineError> {
        let (tw, th, columns) = (
            self.plan.tile_width as usize,
            self.plan.tile_height as usize,
            self.plan.columns.max(1) as usize,
        );
        let width = tw * columns;
        let height = th * self.rows() as usize;
        let mut sprite = frame::Video::new(Pixel::YUVJ420P, width as u32, height as u32);
        for plane in 0..3 {
            let fill = if plane == 0 { 0 } else { 128 };
            sprite.data_mut(plane).fill(fill);
        }
        for (i, frame) in self.tiles.iter().enumerate() {
            let tile = scale(frame, self.plan.tile_width, self.plan.tile_height)?;
            let (x, y) = ((i % columns) * tw, (i / columns) * th);
            for plane in 0..3 {
                let (px, py, pw, ph) =
                    if plane == 0 { (x, y, tw, th) } else { (x / 2, y / 2, tw / 2, th / 2) };
                let (src_stride, dst_stride) = (tile.stride(plane), sprite.stride(plane));
                let source = tile.data(plane);
                let target = sprite.data_mut(plane);
                for row in 0..ph {
                    let from = row * src_stride;
                    let to = (py + row) * dst_stride + px;
                    target[to..to + pw].copy_from_slice(&source[from..from + pw]);
                }
            }
        }
        Ok(sprite)
    }

    fn vtt(&self, duration_secs: f64) -> String {
        let columns = self.plan.columns.max(1);
        let mut vtt = String::from("WEBVTT\n\n");
        for i in 0..self.plan.tiles {
            let start = f64::from(i) * self.plan.interval_secs;
            let end = (start + self.plan.interval_secs).min(duration_secs.max(start + 0.001));
            let (x, y) =
                ((i % columns) * self.plan.tile_width, (i / columns) * self.plan.tile_height);
            let _ = writeln!(
                vtt,
                "{} --> {}\nstoryboard.jpg#xywh={x},{y},{},{}\n",
                timestamp(start),
                timestamp(end),
                self.plan.tile_width,
                self.plan.tile_height
            );
        }
        vtt
    }
}

fn timestamp(seconds: f64) -> String {
    let millis = (seconds * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000
    )
}

/// Encodes one frame with the MJPEG encoder; the packet is the JPEG file.
fn write_jpeg(frame: &frame::Video, path: &Path) -> Result<(), EngineError> {
    let codec = encoder::find(codec::Id::MJPEG)
        .ok_or_else(|| EngineError::new(ErrorCode::Failed, "no MJPEG encoder"))?;
    let mut context = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| crate::error::output("jpeg encoder", &e))?;
    context.set_width(frame.width());
    context.set_height(frame.height());
    context.set_format(Pixel::YUVJ420P);
    context.set_time_base(Rational::new(1, 1));
    context.set_global_quality(JPEG_QUALITY * ffmpeg_next::ffi::FF_QP2LAMBDA);
    context.set_flags(codec::Flags::QSCALE);
    let mut opened = context
        .open_as_with(codec, Dictionary::new())
        .map_err(|e| crate::error::output("open jpeg encoder", &e))?;
    let mut input = frame.clone();
    input.set_pts(Some(0));
    opened.send_frame(&input).map_err(|e| crate::error::output("encode jpeg", &e))?;
    opened.send_eof().map_err(|e| crate::error::output("encode jpeg", &e))?;
    let mut packet = Packet::empty();
    opened.receive_packet(&mut packet).map_err(|e| crate::error::output("encode jpeg", &e))?;
    std::fs::write(path, packet.data().unwrap_or_default()).map_err(|e| crate::error::disk(&e))
}
