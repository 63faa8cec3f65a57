//! One rendition's audio: the shared decoded frames go through a filter graph that resamples
//! to 48 kHz, mixes to the planned channel count and re-chunks to the encoder's frame size
//! (AAC takes exactly 1024 samples per frame, Opus 960), then to the encoder.
//!
//! The audio lasts exactly as long as the video: `aresample`'s timestamp sync fills a late
//! start and gaps with silence (and drops what comes before the video's first frame), `apad`
//! supplies silence after audio that ends early, and frames are held back until the video has
//! reached them, so audio running past the video's end is cut at it.

use std::collections::VecDeque;

use ffmpeg_next::util::channel_layout::ChannelLayout;
use ffmpeg_next::{Dictionary, Packet, Rational, codec, encoder, filter, format, frame};

use tcoder::engine::plan::AudioPlan;
use tcoder::engine::{EngineError, ErrorCode};
use tcoder::jobs::AudioCodec;

use super::meter;

/// What the decoded source audio looks like (for the filter graph's input).
#[derive(Debug, Clone)]
pub(crate) struct SourceAudio {
    pub time_base: Rational,
    pub sample_rate: u32,
    pub format: format::Sample,
    /// Empty when the stream does not say (PCM in AVI or Matroska, a MOV without a `chan`
    /// atom): then the usual layout of `channels` is assumed, as FFmpeg's own CLI does.
    pub layout: ChannelLayout,
    pub channels: u16,
}

impl SourceAudio {
    /// What `decoder` makes of a stream whose timestamps are in `time_base`.
    pub(crate) fn of(decoder: &ffmpeg_next::decoder::Audio, time_base: Rational) -> SourceAudio {
        SourceAudio {
            time_base,
            sample_rate: decoder.rate(),
            format: decoder.format(),
            layout: decoder.channel_layout(),
            channels: decoder.channels(),
        }
    }

    /// The channel count of a source that names no layout (its frames are given the usual
    /// layout of that count by [`graph_input`]).
    pub(crate) fn unnamed_channels(&self) -> Option<i32> {
        (self.layout.bits() == 0).then_some(i32::from(self.channels.max(1)))
    }

    /// The layout the filter graph is told the frames have.
    fn known_layout(&self) -> ChannelLayout {
        if self.layout.bits() == 0 {
            ChannelLayout::default(i32::from(self.channels.max(1)))
        } else {
            self.layout
        }
    }
}

pub(crate) struct AudioEncoder {
    graph: filter::Graph,
    encoder: encoder::Audio,
    filtered: frame::Audio,
    /// Time base of the encoder (1/48000).
    pub time_base: Rational,
    /// Start offset removed from the source timestamps, in the source time base.
    offset: i64,
    /// Filtered frames the video has not reached yet (encoder format, pts in `time_base`).
    pending: VecDeque<frame::Audio>,
    /// Samples per second of the output.
    rate: i64,
    /// The pts the next frame from the graph gets when it carries none.
    next_pts: i64,
    /// How far the video has got, in seconds.
    reached: f64,
    /// Packets taken out of the encoder to make room for more frames, not yet muxed.
    ready: VecDeque<Packet>,
    /// Channels of a source that names no layout: its frames get the assumed one (the graph
    /// refuses frames whose layout differs from the one it was built for).
    unnamed_channels: Option<i32>,
    /// The loudness of what is encoded, when normalised.
    loudness: meter::Meter,
    /// Frames that end by this sample are not encoded (an audio range's encoder starts a
    /// little before its range).
    skip_before: i64,
}

/// Held-back audio beyond this is released anyway (a video with a long gap must not hold
/// the whole soundtrack in memory).
const MAX_PENDING_SECS: i64 = 30;

/// The encoder `plan` asks for, opened, and its time base (one tick per sample).
fn open_encoder(plan: &AudioPlan) -> Result<(encoder::Audio, Rational), EngineError> {
    let name = match plan.codec {
        AudioCodec::Aac => "aac",
        AudioCodec::Opus => "libopus",
    };
    let codec = encoder::find_by_name(name).ok_or_else(|| {
        EngineError::new(ErrorCode::Failed, format!("encoder {name} is not available"))
    })?;
    let mut context = codec::context::Context::new_with_codec(codec)
        .encoder()
        .audio()
        .map_err(|e| crate::error::output("audio encoder", &e))?;
    let layout = ChannelLayout::default(i32::from(plan.channels));
    let sample_format = match plan.codec {
        AudioCodec::Aac => format::Sample::F32(format::sample::Type::Planar),
        AudioCodec::Opus => format::Sample::F32(format::sample::Type::Packed),
    };
    context.set_rate(plan.sample_rate as i32);
    context.set_channel_layout(layout);
    context.set_format(sample_format);
    context.set_bit_rate(plan.bit_rate as usize);
    let time_base = Rational::new(1, plan.sample_rate as i32);
    context.set_time_base(time_base);
    context.set_flags(codec::Flags::GLOBAL_HEADER);
    let encoder = context
        .open_as_with(codec, Dictionary::new())
        .map_err(|e| crate::error::output(&format!("open {name}"), &e))?;
    Ok((encoder, time_base))
}

/// How long the encoder `plan` asks for primes before its first real sample (AAC: 1024
/// samples). Its first packet starts that much before zero, and the HLS muxer moves every
/// stream later by as much to keep timestamps non-negative: a whole-title encode's video
/// starts there, so a split title's video chunks are moved by the same amount.
pub(crate) fn priming_secs(plan: &AudioPlan) -> Result<f64, EngineError> {
    let (encoder, time_base) = open_encoder(plan)?;
    // SAFETY: a plain field of the opened encoder's context.
    let padding = unsafe { (*encoder.as_ptr()).initial_padding };
    Ok(f64::from(padding) * f64::from(time_base))
}

impl AudioEncoder {
    /// `gain_db`: the loudness normalisation's gain, when asked (its result is measured:
    /// [`Self::loudness`]).
    pub(crate) fn open(
        plan: &AudioPlan,
        source: &SourceAudio,
        offset: i64,
        gain_db: Option<f64>,
    ) -> Result<AudioEncoder, EngineError> {
        let (encoder, time_base) = open_encoder(plan)?;
        // async=1: follow the timestamps (silence into gaps and a late start, drop what
        // precedes the video's first frame via first_pts=0); the loudness gain and its
        // measurement when asked; apad: silence after an early end.
        let loudness = match gain_db {
            Some(gain) => format!(",volume={gain:.2}dB,{}", meter::METER),
            None => String::new(),
        };
        let spec = format!("aresample={}:async=1:first_pts=0{loudness},apad", plan.sample_rate);
        let graph = build_graph(source, Some(&encoder), &spec)?;
        Ok(AudioEncoder {
            graph,
            encoder,
            filtered: frame::Audio::empty(),
            time_base,
            offset,
            pending: VecDeque::new(),
            rate: i64::from(plan.sample_rate),
            next_pts: 0,
            reached: 0.0,
            ready: VecDeque::new(),
            unnamed_channels: source.unnamed_channels(),
            loudness: meter::Meter::default(),
            skip_before: i64::MIN,
        })
    }

    /// Encodes nothing that ends by sample `sample` (the frames still go through the filter
    /// graph, so what follows lies where the whole title's encode puts it).
    pub(crate) fn skip_before(&mut self, sample: i64) {
        self.skip_before = sample;
    }

    pub(crate) fn context(&self) -> &codec::Context {
        &self.encoder
    }

    /// The loudness of the normalised audio (after [`Self::finish`]); `None` when not
    /// normalised.
    pub(crate) fn loudness(&self) -> Option<tcoder::engine::LoudnessMeasure> {
        self.loudness.measured()
    }

    /// Feeds a decoded frame (source time base); what the graph lets through waits until
    /// the video reaches it ([`Self::release`]).
    pub(crate) fn send(&mut self, frame: &frame::Audio) -> Result<(), EngineError> {
        let shifted = graph_input(frame, self.offset, self.unnamed_channels)?;
        self.graph
            .get("in")
            .expect("graph has an input")
            .source()
            .add(&shifted)
            .map_err(|e| crate::error::output("filter audio", &e))?;
        self.pull(None)?;
        self.release(self.reached)
    }

    /// Encodes the held-back audio that ends by `video_secs` (how far the video has got).
    pub(crate) fn release(&mut self, video_secs: f64) -> Result<(), EngineError> {
        self.reached = self.reached.max(video_secs);
        let video_secs = self.reached;
        let until = (video_secs * self.rate as f64).floor() as i64;
        while let Some(front) = self.pending.front() {
            let end = front.pts().unwrap_or(0) + front.samples() as i64;
            let backlog =
                self.pending.back().map_or(0, |b| b.pts().unwrap_or(0)) - front.pts().unwrap_or(0);
            if end > until && backlog < MAX_PENDING_SECS * self.rate {
                break;
            }
            let frame = self.pending.pop_front().expect("front exists");
            self.encode(&frame)?;
        }
        Ok(())
    }

    /// The video ended at `end_secs`: the audio is cut or padded with silence to end there,
    /// then the encoder is flushed.
    pub(crate) fn finish(&mut self, end_secs: f64) -> Result<(), EngineError> {
        let end = (end_secs * self.rate as f64).round() as i64;
        self.graph
            .get("in")
            .expect("graph has an input")
            .source()
            .flush()
            .map_err(|e| crate::error::output("flush audio filter", &e))?;
        // apad makes silence for as long as it is asked: pull up to the video's end only.
        self.pull(Some(end))?;
        while let Some(mut frame) = self.pending.pop_front() {
            let start = frame.pts().unwrap_or(0);
            if start >= end {
                break;
            }
            let samples = frame.samples() as i64;
            if start + samples > end {
                frame.set_samples((end - start) as usize);
            }
            self.encode(&frame)?;
        }
        self.take_ready();
        self.encoder.send_eof().map_err(|e| crate::error::output("flush audio encoder", &e))
    }

    /// Moves every packet the encoder has into `ready`.
    fn take_ready(&mut self) {
        let mut packet = Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            self.ready.push_back(std::mem::replace(&mut packet, Packet::empty()));
        }
    }

    /// Moves what the graph has into `pending`; with `until`, stops once a frame reaches it.
    fn pull(&mut self, until: Option<i64>) -> Result<(), EngineError> {
        loop {
            if let (Some(until), Some(last)) = (until, self.pending.back())
                && last.pts().unwrap_or(0) + last.samples() as i64 >= until
            {
                return Ok(());
            }
            let pulled = self
                .graph
                .get("out")
                .expect("graph has an output")
                .sink()
                .frame(&mut self.filtered);
            match pulled {
                Ok(()) => {
                    self.loudness.read(&self.filtered);
                    let mut frame = self.filtered.clone();
                    let pts = frame.pts().unwrap_or(self.next_pts);
                    frame.set_pts(Some(pts));
                    self.next_pts = pts + frame.samples() as i64;
                    self.pending.push_back(frame);
                }
                Err(ffmpeg_next::Error::Eof) => return Ok(()),
                Err(ffmpeg_next::Error::Other { errno })
                    if errno == ffmpeg_next::util::error::EAGAIN =>
                {
                    return Ok(());
                }
                Err(e) => return Err(crate::error::output("filter audio", &e)),
            }
        }
    }

    /// Sends a frame; when the encoder is full, its packets wait in `ready` for the muxers.
    fn encode(&mut self, frame: &frame::Audio) -> Result<(), EngineError> {
        if frame.pts().unwrap_or(0) + frame.samples() as i64 <= self.skip_before {
            return Ok(());
        }
        for _ in 0..2 {
            match self.encoder.send_frame(frame) {
                Err(ffmpeg_next::Error::Other { errno })
                    if errno == ffmpeg_next::util::error::EAGAIN =>
                {
                    self.take_ready();
                }
                result => return result.map_err(|e| crate::error::output("encode audio", &e)),
            }
        }
        Err(EngineError::new(ErrorCode::Failed, "the audio encoder takes no more frames"))
    }

    pub(crate) fn receive(&mut self) -> Option<Packet> {
        if let Some(packet) = self.ready.pop_front() {
            return Some(packet);
        }
        let mut packet = Packet::empty();
        self.encoder.receive_packet(&mut packet).ok().map(|()| packet)
    }
}

/// A decoded frame as a filter graph built for `SourceAudio::known_layout` takes it: a new
/// reference to the decoder's buffers (not a copy: `frame::Audio::clone` allocates by channel
/// layout and came out empty, and refused, for a source that names none), its timestamps
/// moved back by `offset`, and the assumed layout where the source names none.
pub(crate) fn graph_input(
    frame: &frame::Audio,
    offset: i64,
    unnamed_channels: Option<i32>,
) -> Result<frame::Audio, EngineError> {
    let mut shifted = frame::Audio::empty();
    // SAFETY: av_frame_ref makes `shifted` (empty, ours) a reference to `frame`'s buffers
    // and copies its properties; both frames stay valid and independent structs.
    let referenced =
        unsafe { ffmpeg_next::ffi::av_frame_ref(shifted.as_mut_ptr(), frame.as_ptr()) };
    if referenced < 0 {
        return Err(crate::error::output("filter audio", &ffmpeg_next::Error::from(referenced)));
    }
    shifted.set_pts(frame.timestamp().map(|pts| pts - offset));
    if let Some(channels) = unnamed_channels {
        // Such a decoder leaves both the layout and the (deprecated) channel count of its
        // frames unset, and the graph checks one against the other.
        // SAFETY: fields of a frame this function owns; av_channel_layout_default fills
        // the layout struct in place (no allocation for a native layout).
        unsafe {
            let frame = shifted.as_mut_ptr();
            ffmpeg_next::ffi::av_channel_layout_default(&mut (*frame).ch_layout, channels);
            (*frame).channels = channels;
        }
        shifted.set_channel_layout(ChannelLayout::default(channels));
    }
    Ok(shifted)
}

/// The audio graph for `source`: `spec` between the input (`in`) and the sink (`out`), the
/// sink set to what `encoder` takes when there is one.
pub(crate) fn build_graph(
    source: &SourceAudio,
    encoder: Option<&encoder::Audio>,
    spec: &str,
) -> Result<filter::Graph, EngineError> {
    let fail = |e: ffmpeg_next::Error| crate::error::output("audio filter graph", &e);
    let mut graph = filter::Graph::new();
    let layout = source.known_layout();
    let args = format!(
        "time_base={}:sample_rate={}:sample_fmt={}:channel_layout=0x{:x}",
        source.time_base,
        source.sample_rate,
        source.format.name(),
        layout.bits()
    );
    let abuffer = filter::find("abuffer")
        .ok_or_else(|| EngineError::new(ErrorCode::Failed, "no abuffer filter"))?;
    let abuffersink = filter::find("abuffersink")
        .ok_or_else(|| EngineError::new(ErrorCode::Failed, "no abuffersink filter"))?;
    graph.add(&abuffer, "in", &args).map_err(fail)?;
    graph.add(&abuffersink, "out", "").map_err(fail)?;
    if let Some(encoder) = encoder {
        let mut out = graph.get("out").expect("just added");
        out.set_sample_format(encoder.format());
        out.set_channel_layout(encoder.channel_layout());
        out.set_sample_rate(encoder.rate());
    }
    graph
        .output("in", 0)
        .map_err(fail)?
        .input("out", 0)
        .map_err(fail)?
        .parse(spec)
        .map_err(fail)?;
    graph.validate().map_err(fail)?;
    let frame_size = encoder.map_or(0, |e| e.frame_size());
    if frame_size > 0 {
        graph.get("out").expect("just added").sink().set_frame_size(frame_size);
    }
    Ok(graph)
}
