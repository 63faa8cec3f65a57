//! One rendition's audio: the shared decoded frames go through a filter graph that resamples
//! to 48 kHz, mixes to the planned channel count and re-chunks to the encoder's frame size
//! (AAC takes exactly 1024 samples per frame, Opus 960), then to the encoder.

use ffmpeg_next::util::channel_layout::ChannelLayout;
use ffmpeg_next::{Dictionary, Packet, Rational, codec, encoder, filter, format, frame};

use crate::engine::plan::AudioPlan;
use crate::engine::{EngineError, ErrorCode};
use crate::jobs::AudioCodec;

/// What the decoded source audio looks like (for the filter graph's input).
#[derive(Debug, Clone)]
pub(crate) struct SourceAudio {
    pub time_base: Rational,
    pub sample_rate: u32,
    pub format: format::Sample,
    pub layout: ChannelLayout,
}

pub(crate) struct AudioEncoder {
    graph: filter::Graph,
    encoder: encoder::Audio,
    filtered: frame::Audio,
    /// Time base of the encoder (1/48000).
    pub time_base: Rational,
    /// Start offset removed from the source timestamps, in the source time base.
    offset: i64,
}

impl AudioEncoder {
    pub(crate) fn open(
        plan: &AudioPlan,
        source: &SourceAudio,
        offset: i64,
    ) -> Result<AudioEncoder, EngineError> {
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
            .map_err(|e| EngineError::output("audio encoder", &e))?;
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
            .map_err(|e| EngineError::output(&format!("open {name}"), &e))?;
        let graph = build_graph(source, &encoder, plan)?;
        Ok(AudioEncoder { graph, encoder, filtered: frame::Audio::empty(), time_base, offset })
    }

    pub(crate) fn context(&self) -> &codec::Context {
        &self.encoder
    }

    /// Feeds a decoded frame (source time base); encodes whatever the graph lets through.
    pub(crate) fn send(&mut self, frame: &frame::Audio) -> Result<(), EngineError> {
        let mut shifted = frame.clone();
        shifted.set_pts(frame.timestamp().map(|pts| pts - self.offset));
        self.graph
            .get("in")
            .expect("graph has an input")
            .source()
            .add(&shifted)
            .map_err(|e| EngineError::output("filter audio", &e))?;
        self.drain_graph()
    }

    /// Flushes the graph and the encoder.
    pub(crate) fn send_eof(&mut self) -> Result<(), EngineError> {
        self.graph
            .get("in")
            .expect("graph has an input")
            .source()
            .flush()
            .map_err(|e| EngineError::output("flush audio filter", &e))?;
        self.drain_graph()?;
        self.encoder.send_eof().map_err(|e| EngineError::output("flush audio encoder", &e))
    }

    fn drain_graph(&mut self) -> Result<(), EngineError> {
        loop {
            let pulled = self
                .graph
                .get("out")
                .expect("graph has an output")
                .sink()
                .frame(&mut self.filtered);
            match pulled {
                Ok(()) => self
                    .encoder
                    .send_frame(&self.filtered)
                    .map_err(|e| EngineError::output("encode audio", &e))?,
                Err(ffmpeg_next::Error::Eof) => return Ok(()),
                Err(ffmpeg_next::Error::Other { errno })
                    if errno == ffmpeg_next::util::error::EAGAIN =>
                {
                    return Ok(());
                }
                Err(e) => return Err(EngineError::output("filter audio", &e)),
            }
        }
    }

    pub(crate) fn receive(&mut self) -> Option<Packet> {
        let mut packet = Packet::empty();
        self.encoder.receive_packet(&mut packet).ok().map(|()| packet)
    }
}

fn build_graph(
    source: &SourceAudio,
    encoder: &encoder::Audio,
    plan: &AudioPlan,
) -> Result<filter::Graph, EngineError> {
    let fail = |e: ffmpeg_next::Error| EngineError::output("audio filter graph", &e);
    let mut graph = filter::Graph::new();
    let layout = if source.layout.bits() == 0 { ChannelLayout::default(2) } else { source.layout };
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
    {
        let mut out = graph.get("out").expect("just added");
        out.set_sample_format(encoder.format());
        out.set_channel_layout(encoder.channel_layout());
        out.set_sample_rate(encoder.rate());
    }
    let spec = format!("aresample={}", plan.sample_rate);
    graph
        .output("in", 0)
        .map_err(fail)?
        .input("out", 0)
        .map_err(fail)?
        .parse(&spec)
        .map_err(fail)?;
    graph.validate().map_err(fail)?;
    let frame_size = encoder.frame_size();
    if frame_size > 0 {
        graph.get("out").expect("just added").sink().set_frame_size(frame_size);
    }
    Ok(graph)
}
