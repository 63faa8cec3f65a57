//! Pictures kept from the decode for the thumbnails and the preview: scaled to full-range
//! YUV 4:2:0, and written raw (a chunk's share, for the stitch) and read back.

use std::path::Path;

use ffmpeg_next::format::Pixel;
use ffmpeg_next::frame;
use ffmpeg_next::software::scaling;

use tcoder::engine::{EngineError, ErrorCode};

/// `frame` scaled to `width`×`height`, full-range YUV 4:2:0 (what the JPEG encoder takes).
pub(crate) fn scale(
    frame: &frame::Video,
    width: u32,
    height: u32,
) -> Result<frame::Video, EngineError> {
    let mut scaler = scaling::Context::get(
        frame.format(),
        frame.width(),
        frame.height(),
        Pixel::YUVJ420P,
        width,
        height,
        scaling::Flags::BICUBIC,
    )
    .map_err(|e| crate::error::output("thumbnail scaler", &e))?;
    let mut scaled = frame::Video::new(Pixel::YUVJ420P, width, height);
    scaler.run(frame, &mut scaled).map_err(|e| crate::error::output("scale thumbnail", &e))?;
    Ok(scaled)
}

/// The planes of a YUV 4:2:0 frame, rows without padding.
pub(crate) fn raw(frame: &frame::Video) -> Vec<u8> {
    let (width, height) = (frame.width() as usize, frame.height() as usize);
    let mut bytes = Vec::with_capacity(width * height * 3 / 2);
    for plane in 0..3 {
        let (w, h) = if plane == 0 { (width, height) } else { (width / 2, height / 2) };
        let stride = frame.stride(plane);
        let data = frame.data(plane);
        for row in 0..h {
            bytes.extend_from_slice(&data[row * stride..row * stride + w]);
        }
    }
    bytes
}

/// A frame read back from [`raw`] bytes.
pub(crate) fn from_raw(path: &Path, width: u32, height: u32) -> Result<frame::Video, EngineError> {
    let bytes = std::fs::read(path).map_err(|e| crate::error::disk(&e))?;
    let (w, h) = (width as usize, height as usize);
    if bytes.len() != w * h * 3 / 2 {
        return Err(EngineError::new(
            ErrorCode::OutputInvalid,
            "a thumbnail part has the wrong size",
        ));
    }
    let mut frame = frame::Video::new(Pixel::YUVJ420P, width, height);
    let mut offset = 0;
    for plane in 0..3 {
        let (pw, ph) = if plane == 0 { (w, h) } else { (w / 2, h / 2) };
        let stride = frame.stride(plane);
        let data = frame.data_mut(plane);
        for row in 0..ph {
            data[row * stride..row * stride + pw].copy_from_slice(&bytes[offset..offset + pw]);
            offset += pw;
        }
    }
    Ok(frame)
}
