//! The engine on real media: generated clips and everyday files, judged with ffprobe/ffmpeg.

mod engine;
mod everyday;
