//! One rendition's quality meter: inside each sampled window, the picture its encoder was
//! given is kept, the encoder's packets are decoded (from the window's keyframe), and each
//! decoded picture is scored against the kept one. Outside the windows it costs nothing.
//! A measurement that fails (a decoder error) gives no score and a reason; it never fails
//! the encode.

use std::collections::BTreeMap;

use ffmpeg_next::{Packet, Rational, codec, decoder, frame};

use super::Sampling;
use super::vmaf::{self, Vmaf};

pub(crate) struct QualityMeter {
    /// `[start, end)` windows in the encoder's time base, in order.
    windows: Vec<(i64, i64)>,
    /// The window being measured or waited for.
    current: usize,
    decoder: decoder::Video,
    /// The pictures the encoder was given inside the current window, by pts.
    references: BTreeMap<i64, frame::Video>,
    /// Scoring the current window (its keyframe came).
    run: Option<Vmaf>,
    scores: Vec<f64>,
    failed: Option<String>,
    /// Every this many pictures are scored.
    every: u32,
}

/// Pictures held for scoring at most (an encoder's lookahead and reordering are far fewer):
/// bounds the meter's memory whatever an encoder does.
const MAX_HELD: usize = 256;

impl QualityMeter {
    /// A meter for the encoder `parameters` (of the opened encoder, with its global
    /// headers), measuring as `sampling` says (seconds on the encoder's timeline); `None`
    /// when its pictures are not a format VMAF scores or there is no window.
    pub(crate) fn open(
        parameters: codec::Parameters,
        format: ffmpeg_next::format::Pixel,
        time_base: Rational,
        sampling: &Sampling,
    ) -> Result<Option<QualityMeter>, String> {
        let windows = &sampling.windows;
        if windows.is_empty() || vmaf::bits_of(format).is_none() {
            return Ok(None);
        }
        let mut decoding = codec::context::Context::from_parameters(parameters)
            .map_err(|e| format!("decoder parameters: {e}"))?;
        decoding.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Slice,
            count: 1,
            ..Default::default()
        });
        decoding.set_time_base(time_base);
        let decoder = decoding.decoder().video().map_err(|e| format!("open the decoder: {e}"))?;
        let tick = f64::from(time_base);
        // A picture is in `[start, end)` seconds when its tick is in `[first tick at or after
        // start, first tick at or after end)` (less a rounding error: 2 s is tick 50 of 1/25).
        let at_or_after = |secs: f64| (secs / tick - 1e-6).ceil() as i64;
        let windows = windows
            .iter()
            .map(|(start, end)| (at_or_after(*start), at_or_after(*end)))
            .filter(|(start, end)| end > start)
            .collect();
        Ok(Some(QualityMeter {
            windows,
            current: 0,
            decoder,
            references: BTreeMap::new(),
            run: None,
            scores: Vec::new(),
            failed: None,
            every: sampling.every,
        }))
    }

    /// Whether the picture of `pts` is one to keep.
    pub(crate) fn wants(&self, pts: i64) -> bool {
        // Any window ahead: the encoder may take a later window's pictures while the packets
        // of an earlier one are still coming out.
        self.failed.is_none()
            && self.windows[self.current..].iter().any(|(s, e)| (*s..*e).contains(&pts))
    }

    /// Keeps the picture the encoder is given at `pts` (see [`Self::wants`]).
    pub(crate) fn keep(&mut self, pts: i64, picture: &frame::Video) {
        if self.references.len() >= MAX_HELD {
            self.fail("the encoder held back more pictures than the meter keeps");
            return;
        }
        self.references.insert(pts, picture.clone());
    }

    /// Takes one of the encoder's packets (in its time base): decoded and scored when it
    /// belongs to the window being measured.
    pub(crate) fn packet(&mut self, packet: &Packet) {
        if self.failed.is_some() {
            return;
        }
        let Some(&(start, end)) = self.windows.get(self.current) else { return };
        let (pts, dts) = (packet.pts().unwrap_or(i64::MIN), packet.dts().or(packet.pts()));
        if self.run.is_some() && dts.is_some_and(|dts| dts >= end) {
            // Every picture shown before the window's end was decoded before this packet.
            self.end_window();
            return self.packet(packet);
        }
        if self.run.is_none() {
            if dts.is_some_and(|dts| dts >= end) {
                // The window passed without its keyframe: nothing of it can be scored.
                self.end_window();
                return self.packet(packet);
            }
            if !(packet.is_key() && (start..end).contains(&pts)) {
                return;
            }
            match Vmaf::new(self.every) {
                Ok(run) => self.run = Some(run),
                Err(e) => return self.fail(&e),
            }
        }
        if let Err(e) = self.decoder.send_packet(packet) {
            return self.fail(&format!("decode: {e}"));
        }
        self.score_decoded();
    }

    /// End of the encoder's output: the last window scored; the scores of every picture
    /// measured, or why there are none.
    pub(crate) fn finish(mut self) -> Result<Vec<f64>, String> {
        if self.run.is_some() {
            self.end_window();
        }
        match self.failed {
            Some(reason) => Err(reason),
            None => Ok(self.scores),
        }
    }

    fn score_decoded(&mut self) {
        let mut decoded = frame::Video::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            let Some(pts) = decoded.pts().or(decoded.timestamp()) else { continue };
            // Pictures before this one were never decoded (dropped by the encoder): let go.
            let reference = loop {
                match self.references.pop_first() {
                    Some((kept, picture)) if kept == pts => break Some(picture),
                    Some((kept, picture)) if kept > pts => {
                        self.references.insert(kept, picture);
                        break None;
                    }
                    Some(_) => continue,
                    None => break None,
                }
            };
            let (Some(reference), Some(run)) = (reference, self.run.as_mut()) else { continue };
            if let Err(e) = run.push(&reference, &decoded) {
                return self.fail(&e);
            }
        }
    }

    fn end_window(&mut self) {
        if self.decoder.send_eof().is_ok() {
            self.score_decoded();
        }
        self.decoder.flush();
        if let Some(run) = self.run.take() {
            match run.finish() {
                Ok(scores) => self.scores.extend(scores),
                Err(e) => self.fail(&e),
            }
        }
        // The pictures kept for later windows stay.
        if let Some(&(_, end)) = self.windows.get(self.current) {
            self.references = self.references.split_off(&end);
        }
        self.current += 1;
    }

    fn fail(&mut self, reason: &str) {
        self.failed.get_or_insert_with(|| reason.to_owned());
        self.run = None;
        self.references.clear();
    }
}
