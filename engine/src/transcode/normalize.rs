//! Shows decoded pictures as a viewer would see them before anything is scaled or encoded:
//! interlaced sources are deinterlaced (`bwdif`, one frame per frame) and the display matrix
//! is applied (`transpose`/`hflip`/`vflip`). Non-square pixels need no filter: every
//! rendition and thumbnail is scaled to a square-pixel size planned on the displayed aspect.
//!
//! HDR pictures are tone-mapped here too when the renditions are SDR (`colour`), once for
//! every rendition and thumbnail.
//!
//! Sources that need none of it skip the filter graph entirely (no copy, no cost).

use ffmpeg_next::{filter, frame};

use tcoder::engine::Orientation;
use tcoder::engine::{EngineError, ErrorCode};

/// What the stream header says about the pictures.
#[derive(Debug, Clone)]
pub(crate) struct SourcePictures {
    pub orientation: Orientation,
    /// The header declares a field order (interlaced).
    pub interlaced: bool,
    /// Top field first, when the header says.
    pub top_field_first: Option<bool>,
    pub time_base: ffmpeg_next::Rational,
    /// Tone mapping of HDR pictures to SDR (see `colour`), when the renditions are SDR.
    pub tone_map: Option<String>,
}

/// The filter chain for `source`, given what the first decoded frame says about itself.
/// `None` when pictures are shown as decoded.
pub(crate) fn chain(source: &SourcePictures, first: &frame::Video) -> Option<String> {
    let mut filters = Vec::new();
    if source.interlaced || first.is_interlaced() {
        // The header's field order wins; otherwise each frame's own flags (parity=auto).
        let parity = match source.top_field_first {
            Some(true) => "tff",
            Some(false) => "bff",
            None => "auto",
        };
        // A header that declares interlacing means every frame; frames flagged on their own
        // (mixed content) are deinterlaced only where flagged.
        let deint = if source.interlaced { "all" } else { "interlaced" };
        filters.push(format!("bwdif=mode=send_frame:parity={parity}:deint={deint}"));
    }
    if let Some(turn) = source.orientation.filter() {
        filters.push(turn.to_owned());
    }
    if let Some(tone_map) = &source.tone_map {
        filters.push(tone_map.clone());
    }
    (!filters.is_empty()).then(|| filters.join(","))
}

/// The graph in use and the input it was built for (rebuilt if the decoder's output changes).
struct Graph {
    graph: filter::Graph,
    input: (ffmpeg_next::format::Pixel, u32, u32),
}

pub(crate) struct Normalizer {
    source: SourcePictures,
    /// `None` until the first frame; `Some(None)` when no filter is needed.
    graph: Option<Option<Graph>>,
    spec: Option<String>,
}

impl Normalizer {
    pub(crate) fn new(source: SourcePictures) -> Normalizer {
        Normalizer { source, graph: None, spec: None }
    }

    /// A normalizer that only tone-maps (the thumbnails of a title whose renditions keep
    /// HDR: JPEGs are SDR).
    pub(crate) fn tone_mapping(chain: String, time_base: ffmpeg_next::Rational) -> Normalizer {
        Normalizer::new(SourcePictures {
            orientation: Orientation::Upright,
            interlaced: false,
            top_field_first: None,
            time_base,
            tone_map: Some(chain),
        })
    }

    /// Whether the source turned out to need deinterlacing (known after the first frame).
    pub(crate) fn deinterlaces(&self) -> bool {
        self.spec.as_deref().is_some_and(|s| s.contains("bwdif"))
    }

    /// Feeds one decoded frame; `on_frame` gets every picture ready to be shown.
    pub(crate) fn push(
        &mut self,
        decoded: &frame::Video,
        on_frame: &mut dyn FnMut(&frame::Video) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        if self.graph.is_none() {
            self.spec = chain(&self.source, decoded);
            self.graph = Some(None);
        }
        let Some(spec) = self.spec.clone() else {
            return on_frame(decoded);
        };
        let key = (decoded.format(), decoded.width(), decoded.height());
        let stale = match self.graph.as_ref().and_then(Option::as_ref) {
            Some(graph) => graph.input != key,
            None => true,
        };
        if stale {
            if self.graph.as_ref().is_some_and(Option::is_some) {
                // The decoder's output changed mid-stream: drain what the old graph holds.
                self.flush(on_frame)?;
            }
            let graph = build(&spec, decoded, self.source.time_base)?;
            self.graph = Some(Some(Graph { graph, input: key }));
        }
        let graph = self.graph.as_mut().and_then(Option::as_mut).expect("built above");
        graph
            .graph
            .get("in")
            .expect("graph has an input")
            .source()
            .add(decoded)
            .map_err(|e| crate::error::output("filter video", &e))?;
        drain(&mut graph.graph, on_frame)
    }

    /// End of the stream: the deinterlacer gives back the frame it holds.
    pub(crate) fn flush(
        &mut self,
        on_frame: &mut dyn FnMut(&frame::Video) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let Some(Some(graph)) = self.graph.as_mut() else { return Ok(()) };
        graph
            .graph
            .get("in")
            .expect("graph has an input")
            .source()
            .flush()
            .map_err(|e| crate::error::output("flush video filter", &e))?;
        drain(&mut graph.graph, on_frame)?;
        self.graph = Some(None);
        Ok(())
    }
}

fn drain(
    graph: &mut filter::Graph,
    on_frame: &mut dyn FnMut(&frame::Video) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let mut filtered = frame::Video::empty();
    loop {
        match graph.get("out").expect("graph has an output").sink().frame(&mut filtered) {
            Ok(()) => on_frame(&filtered)?,
            Err(ffmpeg_next::Error::Eof) => return Ok(()),
            Err(ffmpeg_next::Error::Other { errno })
                if errno == ffmpeg_next::util::error::EAGAIN =>
            {
                return Ok(());
            }
            Err(e) => return Err(crate::error::output("filter video", &e)),
        }
    }
}

fn build(
    spec: &str,
    first: &frame::Video,
    time_base: ffmpeg_next::Rational,
) -> Result<filter::Graph, EngineError> {
    let fail = |e: ffmpeg_next::Error| crate::error::output("video filter graph", &e);
    let missing = |name: &str| EngineError::new(ErrorCode::Failed, format!("no {name} filter"));
    let mut graph = filter::Graph::new();
    let aspect = first.aspect_ratio();
    let (num, den) = if aspect.numerator() > 0 && aspect.denominator() > 0 {
        (aspect.numerator(), aspect.denominator())
    } else {
        (1, 1)
    };
    let pixel_format: ffmpeg_next::ffi::AVPixelFormat = first.format().into();
    let args = format!(
        "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={num}/{den}",
        first.width(),
        first.height(),
        pixel_format as i32,
        time_base.numerator(),
        time_base.denominator().max(1),
    );
    graph
        .add(&filter::find("buffer").ok_or_else(|| missing("buffer"))?, "in", &args)
        .map_err(fail)?;
    graph
        .add(&filter::find("buffersink").ok_or_else(|| missing("buffersink"))?, "out", "")
        .map_err(fail)?;
    graph
        .output("in", 0)
        .map_err(fail)?
        .input("out", 0)
        .map_err(fail)?
        .parse(spec)
        .map_err(fail)?;
    graph.validate().map_err(fail)?;
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(orientation: Orientation, interlaced: bool, tff: Option<bool>) -> SourcePictures {
        SourcePictures {
            orientation,
            interlaced,
            top_field_first: tff,
            time_base: ffmpeg_next::Rational::new(1, 25),
            tone_map: None,
        }
    }

    #[test]
    fn filters_are_chosen_from_the_header_and_the_first_frame() {
        let progressive = frame::Video::new(ffmpeg_next::format::Pixel::YUV420P, 16, 16);
        assert_eq!(chain(&source(Orientation::Upright, false, None), &progressive), None);
        assert_eq!(
            chain(&source(Orientation::Clockwise, false, None), &progressive).as_deref(),
            Some("transpose=clock")
        );
        assert_eq!(
            chain(&source(Orientation::UpsideDown, true, Some(false)), &progressive).as_deref(),
            Some("bwdif=mode=send_frame:parity=bff:deint=all,hflip,vflip")
        );
        // No field order in the header, but the frame says it is interlaced.
        let mut flagged = frame::Video::new(ffmpeg_next::format::Pixel::YUV420P, 16, 16);
        // SAFETY: plain field of a frame we own.
        unsafe { (*flagged.as_mut_ptr()).interlaced_frame = 1 };
        assert_eq!(
            chain(&source(Orientation::Upright, false, None), &flagged).as_deref(),
            Some("bwdif=mode=send_frame:parity=auto:deint=interlaced")
        );
    }
}
