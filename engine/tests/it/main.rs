//! The engine on real media: generated clips and everyday files, judged with ffprobe/ffmpeg.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod engine;
mod everyday;
mod quality;
mod split;
