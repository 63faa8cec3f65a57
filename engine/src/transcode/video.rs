//! One rendition's video: scale the shared decoded frame, force keyframes on segment
//! boundaries (the same frames in every rendition, so HLS renditions switch cleanly), encode.

use std::collections::BTreeMap;

use ffmpeg_next::format::Pixel;
use ffmpeg_next::software::scaling;
use ffmpeg_next::{Dictionary, Packet, Rational, codec, encoder, frame, picture};

use tcoder::engine::plan::RenditionPlan;
use tcoder::engine::{EngineError, ErrorCode};
use tcoder::jobs::VideoCodec;

use super::colour::{self, HdrMetadata, Tags};
use crate::quality::Sampling;
use crate::quality::meter::QualityMeter;

/// Encoder settings shared by every rendition of a job.
#[derive(Debug, Clone)]
pub(crate) struct VideoSettings {
    /// x264/x265 preset, e.g. `fast`.
    pub preset: String,
    /// Encoder threads (0 = automatic).
    pub threads: usize,
    /// Where and how the renditions' quality is measured.
    pub sampling: Sampling,
}

pub(crate) struct VideoEncoder {
    pub plan: RenditionPlan,
    encoder: encoder::Video,
    scaler: Option<(scaling::Context, Pixel, u32, u32)>,
    scaled: frame::Video,
    /// What the encoder takes: 8-bit 4:2:0, or 10-bit where HDR is kept.
    pixel: Pixel,
    /// Time base of frames given to the encoder (one tick per frame at the base rate).
    pub time_base: Rational,
    next_keyframe: f64,
    keyframe_step: f64,
    last_pts: Option<i64>,
    /// One tick of `time_base` — a frame at the base rate (or at the average, or the reduced
    /// output rate, whichever the time base is): the duration of the last frame. (One frame
    /// at the *average* rate gave a sparse recording's last frame a tenth of a second where
    /// the source shows it for a sixtieth.)
    frame_duration: i64,
    /// Duration of each frame sent and not yet out of the encoder, by pts: the gap to the
    /// frame after it (known once that one is sent; until then one frame at the planned
    /// rate). Encoders leave packet durations unset; muxers need them (the last MP4 sample,
    /// and HLS segment lengths, which FFmpeg sums from durations). The gap *before* a frame,
    /// used before, gave the frame after a 10 s pause ten seconds and the picture before it
    /// one frame's time: an MP4 of a 16 s recording claimed 23 s.
    durations: BTreeMap<i64, i64>,
    /// Encoded packets in the encoder's order, the first waiting while its duration is not
    /// known yet (it is the newest frame's).
    encoded: std::collections::VecDeque<Packet>,
    /// After [`Self::send_eof`]: the last frame keeps its provisional duration.
    flushing: bool,
    /// Measures the packets' picture quality in the sampled windows; or why it cannot.
    meter: Result<Option<QualityMeter>, String>,
}

/// Frames an encoder holds at most (lookahead and B-frames); bounds `durations`.
const MAX_ENCODER_DELAY: usize = 512;

fn encoder_name(codec: VideoCodec) -> &'static str {
    match codec {
        VideoCodec::H264 => "libx264",
        VideoCodec::Hevc => "libx265",
        VideoCodec::Av1 => "libsvtav1",
        VideoCodec::Vp9 => "libvpx-vp9",
    }
}

/// The MP4 sample entry tag Apple players need for HEVC.
pub(crate) fn codec_tag(codec: VideoCodec) -> Option<[u8; 4]> {
    (codec == VideoCodec::Hevc).then_some(*b"hvc1")
}

impl VideoEncoder {
    /// `colour`: the tags of what the encoder gets (see [`super::colour`]); `hdr`: the
    /// source's HDR metadata, when the rendition keeps HDR.
    pub(crate) fn open(
        plan: &RenditionPlan,
        time_base: Rational,
        keyframe_step: f64,
        settings: &VideoSettings,
        colour: Tags,
        hdr: Option<&HdrMetadata>,
    ) -> Result<VideoEncoder, EngineError> {
        let pixel = colour::pixel_format(plan.dynamic_range);
        let name = encoder_name(plan.video_codec);
        let codec = encoder::find_by_name(name).ok_or_else(|| {
            EngineError::new(ErrorCode::Failed, format!("encoder {name} is not available"))
        })?;
        let mut context = codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| crate::error::output("video encoder", &e))?;
        context.set_width(plan.width);
        context.set_height(plan.height);
        context.set_format(pixel);
        colour.apply(&mut context);
        context.set_time_base(time_base);
        let fps = Rational::from(plan.fps);
        context.set_frame_rate(Some(fps));
        // Capped constant quality (see `RenditionPlan::crf`): libvpx takes the cap as its
        // target rate in constrained-quality mode; the others take it as the VBV rate, and
        // an average bit rate would turn them back to ABR.
        if plan.video_codec == VideoCodec::Vp9 {
            context.set_bit_rate(plan.video_bit_rate as usize);
        } else {
            context.set_max_bit_rate(plan.video_bit_rate as usize);
        }
        context.set_gop(plan.gop);
        // Square pixels, progressive: the normalizer and the planned size took care of both.
        context.set_aspect_ratio(Rational::new(1, 1));
        // SAFETY: a plain field of the encoder context we own, set before it is opened.
        unsafe {
            (*context.as_mut_ptr()).field_order =
                ffmpeg_next::ffi::AVFieldOrder::AV_FIELD_PROGRESSIVE;
        }
        // MP4 and fMP4 keep codec headers out of band.
        context.set_flags(codec::Flags::GLOBAL_HEADER);
        let mut options = Dictionary::new();
        options.set("crf", &plan.crf.to_string());
        options.set("bufsize", &plan.vbv_buffer_bits().to_string());
        options.set("keyint_min", &plan.gop.to_string());
        options.set("threads", &settings.threads.to_string());
        match plan.video_codec {
            VideoCodec::H264 => {
                options.set("preset", &settings.preset);
                options.set("profile", "high");
                // CABAC and 8x8 transforms even with `ultrafast`, which drops both and would
                // give Constrained Baseline: outputs are High profile whatever the preset.
                options.set("x264-params", "cabac=1:8x8dct=1");
                options.set("sc_threshold", "0");
                options.set("forced-idr", "1");
            }
            VideoCodec::Hevc => {
                options.set("preset", &settings.preset);
                options.set("forced-idr", "1");
                let hdr = hdr.map(HdrMetadata::x265_params).unwrap_or_default();
                options.set("x265-params", &format!("log-level=error:scenecut=0{hdr}"));
            }
            VideoCodec::Av1 => {
                options.set("preset", "8");
                let hdr = hdr.map(HdrMetadata::svtav1_params).filter(|p| !p.is_empty());
                let params = match hdr {
                    Some(hdr) => format!("scd=0:{hdr}"),
                    None => "scd=0".to_owned(),
                };
                options.set("svtav1-params", &params);
            }
            VideoCodec::Vp9 => {
                options.set("deadline", "good");
                options.set("cpu-used", "4");
                options.set("row-mt", "1");
            }
        }
        let encoder = context
            .open_as_with(codec, options)
            .map_err(|e| crate::error::output(&format!("open {name}"), &e))?;
        let meter = QualityMeter::open(
            codec::Parameters::from(&encoder),
            pixel,
            time_base,
            &settings.sampling,
        );
        Ok(VideoEncoder {
            meter,
            plan: plan.clone(),
            encoder,
            scaler: None,
            scaled: frame::Video::new(pixel, plan.width, plan.height),
            pixel,
            time_base,
            next_keyframe: 0.0,
            keyframe_step,
            last_pts: None,
            durations: BTreeMap::new(),
            encoded: std::collections::VecDeque::new(),
            flushing: false,
            frame_duration: 1,
        })
    }

    /// How long before its first picture the encoder's first decode time lies: the frames it
    /// reorders (B-frames), each a tick of its time base.
    pub(crate) fn decode_lead_secs(&self) -> f64 {
        // SAFETY: a plain field of the opened encoder's context.
        let reordered = unsafe { (*self.encoder.as_ptr()).has_b_frames };
        f64::from(reordered.max(0)) * f64::from(self.time_base)
    }

    /// The encoder's context (to describe the output stream).
    pub(crate) fn context(&self) -> &codec::Context {
        &self.encoder
    }

    /// Scales `frame` (pts already normalized to start at 0) and sends it to the encoder.
    pub(crate) fn send(&mut self, frame: &frame::Video, pts: i64) -> Result<(), EngineError> {
        // Encoders need strictly increasing timestamps; a repeated or backwards one is dropped.
        if self.last_pts.is_some_and(|last| pts <= last) {
            return Ok(());
        }
        if let Some(last) = self.last_pts {
            self.durations.insert(last, pts - last);
        }
        self.durations.insert(pts, self.frame_duration);
        if self.durations.len() > MAX_ENCODER_DELAY {
            self.durations.pop_first();
        }
        self.last_pts = Some(pts);
        let (format, width, height) = (frame.format(), frame.width(), frame.height());
        let needs_new =
            self.scaler.as_ref().is_none_or(|(_, f, w, h)| (*f, *w, *h) != (format, width, height));
        if needs_new {
            let mut scaler = scaling::Context::get(
                format,
                width,
                height,
                self.pixel,
                self.plan.width,
                self.plan.height,
                scaling::Flags::BICUBIC,
            )
            .map_err(|e| crate::error::output("create scaler", &e))?;
            if colour::full_range_input(format, frame.color_range()) {
                colour::expect_full_range(&mut scaler);
            }
            self.scaler = Some((scaler, format, width, height));
        }
        let (scaler, ..) = self.scaler.as_mut().expect("scaler set above");
        scaler.run(frame, &mut self.scaled).map_err(|e| crate::error::output("scale", &e))?;
        self.scaled.set_pts(Some(pts));
        if let Ok(Some(meter)) = &mut self.meter
            && meter.wants(pts)
        {
            meter.keep(pts, &self.scaled);
        }
        let seconds = pts as f64 * f64::from(self.time_base);
        if seconds + 1e-3 >= self.next_keyframe {
            self.scaled.set_kind(picture::Type::I);
            while self.next_keyframe <= seconds + 1e-3 {
                self.next_keyframe += self.keyframe_step;
            }
        } else {
            self.scaled.set_kind(picture::Type::None);
        }
        self.encoder.send_frame(&self.scaled).map_err(|e| crate::error::output("encode video", &e))
    }

    /// After the last packet: the scores of the pictures measured (none when nothing was to
    /// be), or why the measurement failed.
    pub(crate) fn take_scores(&mut self) -> Result<Option<Vec<f64>>, String> {
        match std::mem::replace(&mut self.meter, Ok(None)) {
            Ok(Some(meter)) => meter.finish().map(Some),
            Ok(None) => Ok(None),
            Err(reason) => Err(reason),
        }
    }

    pub(crate) fn send_eof(&mut self) -> Result<(), EngineError> {
        self.flushing = true;
        self.encoder.send_eof().map_err(|e| crate::error::output("flush video encoder", &e))
    }

    /// The next encoded packet, if one is ready and its duration known (encoders leave it
    /// unset): the newest frame's packet, and any after it, wait for the next frame or the
    /// end of the stream.
    pub(crate) fn receive(&mut self) -> Option<Packet> {
        let mut packet = Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            self.encoded.push_back(std::mem::replace(&mut packet, Packet::empty()));
        }
        let front = self.encoded.front()?;
        if !self.flushing && front.pts().is_some() && front.pts() == self.last_pts {
            return None;
        }
        let mut packet = self.encoded.pop_front()?;
        // Ours wins over the one tick libavcodec may have set: a held picture lasts longer.
        match packet.pts().and_then(|pts| self.durations.remove(&pts)) {
            Some(duration) => packet.set_duration(duration),
            None if packet.duration() <= 0 => packet.set_duration(self.frame_duration),
            None => {}
        }
        if let Ok(Some(meter)) = &mut self.meter {
            meter.packet(&packet);
        }
        Some(packet)
    }
}
