//! One pass over the input: every decoded picture goes to the thumbnails and every rendition
//! (scale → encode → mux), audio is released up to it, progress is reported; then every
//! output is closed, checked and described.

use super::*;

/// Calls `on_progress` at most once per second.
pub(crate) struct ProgressMeter<'a> {
    pub(crate) started: Instant,
    pub(crate) last: Option<Instant>,
    pub(crate) duration: f64,
    pub(crate) frames: u64,
    pub(crate) on_progress: &'a mut dyn FnMut(&Progress),
}

impl ProgressMeter<'_> {
    pub(crate) fn frame(&mut self, media_secs: f64) {
        self.frames += 1;
        if self.last.is_some_and(|l| l.elapsed().as_secs_f64() < 1.0) {
            return;
        }
        self.last = Some(Instant::now());
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-6);
        let speed = media_secs.max(0.0) / elapsed;
        let progress = Progress {
            frames: self.frames,
            percent: (media_secs / self.duration * 100.0).clamp(0.0, 100.0),
            fps: self.frames as f64 / elapsed,
            speed,
            eta_secs: (speed > 0.0).then(|| ((self.duration - media_secs).max(0.0)) / speed),
            parts: None,
        };
        (self.on_progress)(&progress);
    }
}

/// One rendition being produced.
pub(crate) struct Rendition {
    pub(crate) plan: RenditionPlan,
    pub(crate) video: Option<VideoEncoder>,
    pub(crate) audio: Option<AudioEncoder>,
    pub(crate) muxers: Vec<Muxer>,
}

impl Rendition {
    pub(crate) fn drain_video(&mut self) -> Result<(), EngineError> {
        if let Some(video) = &mut self.video {
            while let Some(packet) = video.receive() {
                for muxer in &mut self.muxers {
                    muxer.write(Track::Video, &packet, video.time_base)?;
                }
            }
        }
        Ok(())
    }

    /// End of input: flushes the encoders (audio cut or padded to `video_secs`) and closes
    /// the muxers.
    pub(crate) fn close(&mut self, video_secs: f64) -> Result<(), EngineError> {
        if let Some(video) = &mut self.video {
            video.send_eof()?;
        }
        self.drain_video()?;
        if let Some(audio) = &mut self.audio {
            audio.finish(video_secs)?;
        }
        self.drain_audio()?;
        for muxer in &mut self.muxers {
            muxer.finish()?;
        }
        Ok(())
    }

    pub(crate) fn drain_audio(&mut self) -> Result<(), EngineError> {
        if let Some(audio) = &mut self.audio {
            while let Some(packet) = audio.receive() {
                for muxer in &mut self.muxers {
                    muxer.write(Track::Audio, &packet, audio.time_base)?;
                }
            }
        }
        Ok(())
    }
}

/// A picture ready to be shown (deinterlaced, upright) goes to the thumbnails and every
/// rendition; audio is released up to it.
pub(crate) fn show(
    frame: &frame::Video,
    timeline: &mut Timeline,
    renditions: &mut [Rendition],
    thumbnails: &mut Option<Thumbnails>,
    meter: &mut ProgressMeter<'_>,
) -> Result<(), EngineError> {
    let Some(timestamp) = frame.timestamp() else { return Ok(()) };
    let pts = timestamp - timeline.video_offset;
    let at = seconds(pts, timeline.video_tb);
    if !timeline.in_range(at) {
        return Ok(());
    }
    timeline.shown += 1;
    meter.frame(at - timeline.from_secs);
    if let Some(thumbnails) = thumbnails {
        thumbnails.offer(frame, at)?;
    }
    if let Some(step) = timeline.step {
        if at + 1e-4 < timeline.next_output_secs {
            return Ok(());
        }
        timeline.next_output_secs = at.max(timeline.next_output_secs) + step;
    }
    let encoder_pts = (at.max(0.0) / f64::from(timeline.encoder_tb)).round() as i64;
    // The title's first picture is shown from its start: repeated at the encoders' rate over
    // the sound that plays before it (`MediaInfo::audio_lead_secs`), as players hold it. (One
    // picture lasting the whole lead made FFmpeg's HLS muxer count the lead twice in the last
    // segment's duration.)
    let held_from = if timeline.shown == 1 && timeline.from_secs == 0.0 { 0 } else { encoder_pts };
    for rendition in renditions.iter_mut() {
        for pts in held_from..=encoder_pts {
            if let Some(video) = &mut rendition.video {
                video.send(frame, pts)?;
            }
            rendition.drain_video()?;
        }
        if let Some(audio) = &mut rendition.audio {
            audio.release(at)?;
        }
        rendition.drain_audio()?;
    }
    Ok(())
}

/// Every rendition's muxers (MP4 and/or HLS) with its encoders (or copied streams), headers
/// written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn open_renditions(
    job: &EngineJob,
    plan: &EnginePlan,
    source: &Source,
    encoder_tb: Rational,
    audio_decoder: Option<&ffmpeg::decoder::Audio>,
    colour: &ColourPlan,
    gain_db: Option<f64>,
    sampling: &Sampling,
) -> Result<Vec<Rendition>, EngineError> {
    let out = &job.output_dir;
    let keyframe_step = plan.keyframe_secs();
    let settings = VideoSettings {
        preset: job.settings.x264_preset.clone(),
        threads: job.settings.threads,
        sampling: sampling.clone(),
    };
    let mut renditions = Vec::with_capacity(plan.renditions.len());
    for rendition_plan in &plan.renditions {
        let mut muxers = Vec::new();
        if plan.mp4 {
            std::fs::create_dir_all(out.join("mp4")).map_err(io_error)?;
            muxers.push(Muxer::create(
                &out.join(format!("mp4/{}.mp4", rendition_plan.name)),
                "mp4",
                output::mp4_options(),
            )?);
        }
        // The HLS muxers' position among `muxers`: with audio renditions of their own (several
        // audio tracks), they get no audio stream.
        let hls_muxer = muxers.len();
        if let Some(segment_secs) = plan.hls_segment_secs {
            let dir = out.join("hls").join(&rendition_plan.name);
            std::fs::create_dir_all(&dir).map_err(io_error)?;
            let first_segment = job.task.chunk().map(|c| c.first_segment);
            muxers.push(Muxer::create(
                &dir.join("index.m3u8"),
                "hls",
                output::hls_options(&dir, segment_secs, first_segment),
            )?);
        }
        let (video, audio) = match plan.mode {
            Mode::Copy => {
                for muxer in &mut muxers {
                    muxer.add_copied_stream(
                        Track::Video,
                        source.video_params.clone(),
                        source.video_tb,
                        source.display_matrix.as_deref(),
                    )?;
                    if let Some(audio) = &source.audio {
                        muxer.add_copied_stream(
                            Track::Audio,
                            audio.params.clone(),
                            audio.time_base,
                            None,
                        )?;
                    }
                }
                (None, None)
            }
            Mode::Transcode => {
                let (tags, hdr) = colour.rendition(rendition_plan.dynamic_range);
                let video = VideoEncoder::open(
                    rendition_plan,
                    encoder_tb,
                    keyframe_step,
                    &settings,
                    tags,
                    hdr,
                )?;
                let audio = match (&rendition_plan.audio, audio_decoder, &source.audio) {
                    (Some(audio_plan), Some(decoder), Some(stream)) => {
                        let decoded = SourceAudio::of(decoder, stream.time_base);
                        let offset = source.offset_in(stream.time_base);
                        Some(AudioEncoder::open(audio_plan, &decoded, offset, gain_db)?)
                    }
                    _ => None,
                };
                let separate_audio = plan.audio_renditions.len() > 1;
                for (n, muxer) in muxers.iter_mut().enumerate() {
                    muxer.add_stream(
                        Track::Video,
                        video.context(),
                        video::codec_tag(rendition_plan.video_codec),
                    )?;
                    if let Some(audio) = &audio
                        && !(separate_audio && n >= hls_muxer)
                    {
                        muxer.add_stream(Track::Audio, audio.context(), None)?;
                    }
                }
                (Some(video), audio)
            }
        };
        for muxer in &mut muxers {
            muxer.write_header()?;
        }
        renditions.push(Rendition { plan: rendition_plan.clone(), video, audio, muxers });
    }
    Ok(renditions)
}

/// The one pass over the input: its state and what it found.
pub(crate) struct Pass<'a> {
    pub(crate) renditions: Vec<Rendition>,
    pub(crate) thumbnails: Option<Thumbnails>,
    pub(crate) meter: ProgressMeter<'a>,
    pub(crate) timeline: Timeline,
    pub(crate) normalizer: Normalizer,
    pub(crate) video_decoder: Option<ffmpeg::decoder::Video>,
    pub(crate) audio_decoder: Option<ffmpeg::decoder::Audio>,
    /// Stream copy: packets go to the muxers as they are.
    pub(crate) copy: bool,
    /// Video packets read, and decode errors (video and audio).
    pub(crate) packets: u64,
    pub(crate) decode_errors: u64,
    /// A chunk stops reading once video packets are decoded this far past its end (seconds of
    /// the title): later pictures cannot reorder into it.
    pub(crate) read_until: Option<f64>,
}

impl Pass<'_> {
    /// Reads every packet once: copied, or decoded and shown to every rendition; then flushes
    /// the decoders (and the deinterlacer).
    pub(crate) fn run(
        &mut self,
        input: &mut ffmpeg::format::context::Input,
        source: &Source,
    ) -> Result<(), EngineError> {
        let mut decoded = frame::Video::empty();
        let mut decoded_audio = frame::Audio::empty();
        let audio_index = source.audio.as_ref().map(|a| a.index);
        for (stream, packet) in input.packets() {
            let index = stream.index();
            self.timeline.packet(&packet, source.bases[index], source.kinds.get(index).copied());
            if index == source.video_index {
                let decoded_at = packet
                    .dts()
                    .or(packet.pts())
                    .map(|t| seconds(t - source.video_offset, source.video_tb));
                if let (Some(limit), Some(at)) = (self.read_until, decoded_at)
                    && at > limit
                {
                    break;
                }
                self.packets += 1;
                if self.copy {
                    self.copy_packet(&packet, Track::Video, source.video_tb, source.video_offset)?;
                    let at = packet
                        .pts()
                        .map_or(0.0, |p| seconds(p - source.video_offset, source.video_tb));
                    self.meter.frame(at);
                }
                self.decode_video(Some(&packet), &mut decoded)?;
            } else if Some(index) == audio_index {
                let tb = stream.time_base();
                if self.copy {
                    self.copy_packet(&packet, Track::Audio, tb, source.offset_in(tb))?;
                } else {
                    self.decode_audio(Some(&packet), &mut decoded_audio)?;
                }
            }
        }
        self.decode_video(None, &mut decoded)?;
        self.decode_audio(None, &mut decoded_audio)
    }

    /// Writes `packet` shifted by `offset` to every muxer.
    pub(crate) fn copy_packet(
        &mut self,
        packet: &Packet,
        track: Track,
        time_base: Rational,
        offset: i64,
    ) -> Result<(), EngineError> {
        let mut shifted = packet.clone();
        shifted.set_pts(packet.pts().map(|p| p - offset));
        shifted.set_dts(packet.dts().map(|d| d - offset));
        for rendition in &mut self.renditions {
            for muxer in &mut rendition.muxers {
                muxer.write(track, &shifted, time_base)?;
            }
        }
        Ok(())
    }

    /// Decodes `packet` (`None`: end of stream, flush) and shows every picture.
    pub(crate) fn decode_video(
        &mut self,
        packet: Option<&Packet>,
        decoded: &mut frame::Video,
    ) -> Result<(), EngineError> {
        let Some(decoder) = &mut self.video_decoder else { return Ok(()) };
        if !feed(decoder, packet) {
            self.decode_errors += 1;
            return Ok(());
        }
        let (normalizer, timeline, renditions, thumbnails, meter) = (
            &mut self.normalizer,
            &mut self.timeline,
            &mut self.renditions,
            &mut self.thumbnails,
            &mut self.meter,
        );
        let mut on_shown =
            |shown: &frame::Video| show(shown, timeline, renditions, thumbnails, meter);
        self.decode_errors +=
            receive_video(decoder, decoded, |frame| normalizer.push(frame, &mut on_shown))?;
        if packet.is_none() {
            normalizer.flush(&mut on_shown)?;
        }
        Ok(())
    }

    /// Decodes `packet` (`None`: flush) and feeds every rendition's audio.
    pub(crate) fn decode_audio(
        &mut self,
        packet: Option<&Packet>,
        decoded: &mut frame::Audio,
    ) -> Result<(), EngineError> {
        let Some(decoder) = &mut self.audio_decoder else { return Ok(()) };
        if !feed(decoder, packet) {
            self.decode_errors += 1;
            return Ok(());
        }
        self.decode_errors += receive_audio(decoder, decoded, &mut self.renditions)?;
        Ok(())
    }
}

/// What a title has besides its video variants: audio renditions of their own (several
/// audio tracks) and captions.
#[derive(Default)]
pub(crate) struct Alternates {
    pub(crate) audio: Vec<hls::AudioRendition>,
    pub(crate) subtitles: Vec<super::captions::CaptionRendition>,
    pub(crate) captions: Vec<tcoder::engine::CaptionReport>,
    /// What was left out of them (a caption file of the job that could not be read).
    pub(crate) warnings: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn finish(
    job: &EngineJob,
    media: &MediaInfo,
    plan: &EnginePlan,
    mut renditions: Vec<Rendition>,
    thumbnails: Option<Thumbnails>,
    frames: u64,
    decode_errors: u64,
    output_secs: f64,
    alternates: Alternates,
) -> Result<EngineReport, EngineError> {
    let audio_renditions = &alternates.audio;
    let out = &job.output_dir;
    let mut reports = Vec::new();
    let mut variants = Vec::new();
    // Audio renditions of their own: the variants' playlists are video only.
    let separate_audio = !audio_renditions.is_empty();
    let mut scores = tcoder::engine::QualityScores::new();
    let mut warnings = alternates.warnings;
    for rendition in &mut renditions {
        let quality = match rendition.video.as_mut().map(VideoEncoder::take_scores) {
            Some(Ok(Some(frames))) => {
                let report = tcoder::engine::QualityReport::of(&frames);
                scores.insert(rendition.plan.name.clone(), frames);
                report
            }
            Some(Err(reason)) => {
                warnings.push(format!("{}: quality not measured ({reason})", rendition.plan.name));
                None
            }
            Some(Ok(None)) | None => None,
        };
        let audio = rendition.audio.is_some() || (plan.mode == Mode::Copy && media.audio.is_some());
        let mp4 = plan.mp4.then(|| format!("mp4/{}.mp4", rendition.plan.name));
        let hls = plan.hls_segment_secs.map(|_| format!("hls/{}/index.m3u8", rendition.plan.name));
        let expected = |audio: bool| validate::Expected {
            rendition: &rendition.plan,
            duration: output_secs,
            audio,
            check_dimensions: plan.mode == Mode::Transcode,
        };
        if let Some(path) = &mp4 {
            validate::check(out, path, &expected(audio))?;
        }
        if let Some(path) = &hls {
            validate::check(out, path, &expected(audio && !separate_audio))?;
        }
        if let Some(video) = &rendition.video {
            let mut codecs = video_codec_string(&rendition.plan, video.context());
            if let Some(audio) = &rendition
                .plan
                .audio
                .as_ref()
                .filter(|_| rendition.audio.is_some() && !separate_audio)
            {
                codecs.push(',');
                codecs.push_str(hls::audio_codec_string(audio.codec));
            }
            variants.push(hls::VariantInfo {
                name: rendition.plan.name.clone(),
                width: rendition.plan.width,
                height: rendition.plan.height,
                fps: rendition.plan.fps,
                codecs,
                video_range: hls::video_range(rendition.plan.dynamic_range).to_owned(),
            });
        }
        reports.push(RenditionReport {
            name: rendition.plan.name.clone(),
            width: rendition.plan.width,
            height: rendition.plan.height,
            video_codec: rendition.plan.video_codec,
            audio_codec: rendition
                .plan
                .audio
                .as_ref()
                .filter(|_| rendition.audio.is_some() || plan.mode == Mode::Copy)
                .map(|a| a.codec),
            video_bit_rate: rendition.plan.video_bit_rate,
            mp4,
            hls,
            dynamic_range: rendition.plan.dynamic_range,
            // A part's scores are pooled over the title by the stitch.
            quality: quality.filter(|_| !job.task.is_part()),
        });
    }
    if job.task.is_part() && !scores.is_empty() {
        let json = serde_json::to_vec(&scores).expect("scores serialize");
        std::fs::write(out.join(tcoder::engine::quality::SCORES_FILE), json).map_err(io_error)?;
    }
    let hls_master = if plan.hls_segment_secs.is_some() {
        hls::write_master(&out.join("hls"), &variants, audio_renditions, &alternates.subtitles)?;
        Some("hls/master.m3u8".to_owned())
    } else {
        None
    };
    let thumbnails = match thumbnails {
        // A chunk's share of the thumbnails waits for the stitch (`stitch_thumbnails`).
        Some(thumbs) if job.task.is_part() => {
            thumbs.write_part(&out.join(THUMBNAIL_PARTS_DIR))?;
            None
        }
        Some(thumbs) => Some(thumbs.finish(&out.join("thumbs"), output_secs)?),
        None => None,
    };
    let files = list_files(out)?;
    let has_audio = media.audio.is_some();
    let mut media = media.clone();
    media.warnings.extend(warnings);
    Ok(EngineReport {
        media,
        mode: plan.mode,
        renditions: reports,
        hls_master,
        thumbnails,
        files,
        frames,
        decode_errors,
        probe_secs: 0.0,
        deinterlaced: false,
        loudness: None,
        captions: alternates.captions,
        audio_tracks: if plan.hls_segment_secs.is_some() && has_audio {
            super::audio_track_reports(plan, separate_audio)
        } else {
            Vec::new()
        },
        ladder: None,
    })
}

pub(crate) fn video_codec_string(plan: &RenditionPlan, context: &codec::Context) -> String {
    let ten_bit = plan.dynamic_range != tcoder::engine::DynamicRange::Sdr;
    // SAFETY: reading the encoder's extradata and level, set when it was opened.
    let (extradata, level) = unsafe {
        let raw = context.as_ptr();
        let size = usize::try_from((*raw).extradata_size).unwrap_or(0);
        let data = if (*raw).extradata.is_null() || size == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts((*raw).extradata, size)
        };
        (data.to_vec(), (*raw).level)
    };
    let level = if level > 0 { level } else { 120 };
    match plan.video_codec {
        VideoCodec::H264 => hls::avc_codec_string(&extradata),
        // Main 10 (profile 2, compatible with 2) where HDR is kept, else Main.
        VideoCodec::Hevc if ten_bit => format!("hvc1.2.4.L{level}.B0"),
        VideoCodec::Hevc => format!("hvc1.1.6.L{level}.B0"),
        VideoCodec::Av1 if ten_bit => "av01.0.08M.10".to_owned(),
        VideoCodec::Av1 => "av01.0.08M.08".to_owned(),
        VideoCodec::Vp9 => "vp09.00.40.08".to_owned(),
    }
}
