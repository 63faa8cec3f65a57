//! Colour: what every rendition's pictures are (the tags players read) and how the source's
//! pictures become that.
//!
//! - **SDR sources are not touched.** The scaler keeps the source's matrix and transfer (it
//!   only converts full-range JPEG formats to limited range), so the renditions carry the
//!   source's own tags; where the source says nothing, what players assume for its size
//!   (BT.709 from 720 lines up, BT.601 below) is written down — a 1080p source scaled to a
//!   360p rendition would otherwise be shown with the SD matrix.
//! - **HDR sources (PQ, HLG) are tone-mapped to SDR BT.709** for 8-bit renditions, with zimg
//!   (`zscale`) for the exact transfer and primaries conversions in linear light and
//!   libavfilter's `tonemap` with the Möbius operator (no desaturation) for the highlights:
//!   it keeps in-range colours as they are and compresses only what lies above SDR white,
//!   where Hable's filmic curve darkens everything (a test pattern kept 76 % of its
//!   saturation with Möbius, 55 % with Hable). Every FFmpeg build has it; libplacebo's
//!   operators need a Vulkan device, and workers have no GPU. Without tone mapping, PQ and
//!   HLG code values shown as BT.709 look grey and washed out (20 % of the saturation).
//! - **`hdr: keep`** leaves the pictures as they are and encodes 10-bit with the source's
//!   primaries, transfer, matrix, mastering display and content light levels.

use ffmpeg_next::ffi::{
    AVColorPrimaries, AVColorRange, AVColorSpace, AVColorTransferCharacteristic, AVPixelFormat,
};
use ffmpeg_next::{codec, format::Pixel};

use tcoder::engine::DynamicRange;

/// Colour tags of a stream (or of what an encoder makes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tags {
    pub primaries: AVColorPrimaries,
    pub transfer: AVColorTransferCharacteristic,
    pub matrix: AVColorSpace,
    pub range: AVColorRange,
}

impl Tags {
    /// What the source's codec parameters say (every field may be unspecified).
    pub(crate) fn of(params: &codec::Parameters) -> Tags {
        // SAFETY: plain fields of the codec parameters.
        unsafe {
            let p = params.as_ptr();
            Tags {
                primaries: (*p).color_primaries,
                transfer: (*p).color_trc,
                matrix: (*p).color_space,
                range: (*p).color_range,
            }
        }
    }

    pub(crate) fn dynamic_range(&self) -> DynamicRange {
        match self.transfer {
            AVColorTransferCharacteristic::AVCOL_TRC_SMPTE2084 => DynamicRange::Pq,
            AVColorTransferCharacteristic::AVCOL_TRC_ARIB_STD_B67 => DynamicRange::Hlg,
            _ => DynamicRange::Sdr,
        }
    }

    /// SDR BT.709, limited range: what tone mapping makes.
    pub(crate) fn bt709() -> Tags {
        Tags {
            primaries: AVColorPrimaries::AVCOL_PRI_BT709,
            transfer: AVColorTransferCharacteristic::AVCOL_TRC_BT709,
            matrix: AVColorSpace::AVCOL_SPC_BT709,
            range: AVColorRange::AVCOL_RANGE_MPEG,
        }
    }

    /// The source's tags with what it leaves unspecified filled in as players would assume
    /// for a picture `height` lines high; always limited range (what the scaler outputs).
    pub(crate) fn completed(self, height: u32) -> Tags {
        let hd = height >= 720;
        let pal = matches!(height, 288 | 576);
        let (primaries, transfer, matrix) = match (hd, pal) {
            (true, _) => (
                AVColorPrimaries::AVCOL_PRI_BT709,
                AVColorTransferCharacteristic::AVCOL_TRC_BT709,
                AVColorSpace::AVCOL_SPC_BT709,
            ),
            (false, true) => (
                AVColorPrimaries::AVCOL_PRI_BT470BG,
                AVColorTransferCharacteristic::AVCOL_TRC_BT709,
                AVColorSpace::AVCOL_SPC_BT470BG,
            ),
            (false, false) => (
                AVColorPrimaries::AVCOL_PRI_SMPTE170M,
                AVColorTransferCharacteristic::AVCOL_TRC_SMPTE170M,
                AVColorSpace::AVCOL_SPC_SMPTE170M,
            ),
        };
        use AVColorPrimaries::{AVCOL_PRI_RESERVED, AVCOL_PRI_RESERVED0, AVCOL_PRI_UNSPECIFIED};
        use AVColorSpace::{AVCOL_SPC_RESERVED, AVCOL_SPC_RGB, AVCOL_SPC_UNSPECIFIED};
        use AVColorTransferCharacteristic::{
            AVCOL_TRC_RESERVED, AVCOL_TRC_RESERVED0, AVCOL_TRC_UNSPECIFIED,
        };
        Tags {
            primaries: match self.primaries {
                AVCOL_PRI_UNSPECIFIED | AVCOL_PRI_RESERVED0 | AVCOL_PRI_RESERVED => primaries,
                known => known,
            },
            transfer: match self.transfer {
                AVCOL_TRC_UNSPECIFIED | AVCOL_TRC_RESERVED0 | AVCOL_TRC_RESERVED => transfer,
                known => known,
            },
            // RGB is no YUV matrix: the encoders get YUV from the scaler.
            matrix: match self.matrix {
                AVCOL_SPC_UNSPECIFIED | AVCOL_SPC_RESERVED | AVCOL_SPC_RGB => matrix,
                known => known,
            },
            range: AVColorRange::AVCOL_RANGE_MPEG,
        }
    }

    /// Sets these tags on an encoder context before it is opened (the encoders write them
    /// into the bitstream, the MP4 muxer into a `colr` box).
    pub(crate) fn apply(&self, context: &mut codec::Context) {
        // SAFETY: plain fields of an encoder context this module's caller owns, not yet open.
        unsafe {
            let c = context.as_mut_ptr();
            (*c).color_primaries = self.primaries;
            (*c).color_trc = self.transfer;
            (*c).colorspace = self.matrix;
            (*c).color_range = self.range;
        }
    }

    /// `zscale` names of the transfer, primaries, matrix and range.
    fn zscale_input(&self) -> String {
        let transfer = match self.transfer {
            AVColorTransferCharacteristic::AVCOL_TRC_ARIB_STD_B67 => "arib-std-b67",
            _ => "smpte2084",
        };
        let matrix = match self.matrix {
            AVColorSpace::AVCOL_SPC_BT2020_CL => "bt2020c",
            AVColorSpace::AVCOL_SPC_BT709 => "709",
            _ => "bt2020nc",
        };
        let primaries = match self.primaries {
            AVColorPrimaries::AVCOL_PRI_BT709 => "709",
            AVColorPrimaries::AVCOL_PRI_SMPTE432 => "smpte432",
            _ => "2020",
        };
        let range = match self.range {
            AVColorRange::AVCOL_RANGE_JPEG => "full",
            _ => "limited",
        };
        format!("tin={transfer}:pin={primaries}:min={matrix}:rin={range}")
    }
}

/// The source's colour and what each rendition makes of it.
pub(crate) struct ColourPlan {
    source: Tags,
    /// Stored height of the source's pictures (what players guess unspecified colours by).
    source_height: u32,
    /// The source's HDR metadata, read when a rendition keeps HDR.
    pub hdr: Option<HdrMetadata>,
}

impl ColourPlan {
    pub(crate) fn new(source: Tags, source_height: u32) -> ColourPlan {
        ColourPlan { source, source_height, hdr: None }
    }

    pub(crate) fn source_range(&self) -> DynamicRange {
        self.source.dynamic_range()
    }

    /// Whether pictures are tone-mapped before any rendition sees them: an HDR source whose
    /// renditions are SDR.
    pub(crate) fn tone_maps(&self, rendition: DynamicRange) -> bool {
        self.source_range() != DynamicRange::Sdr && rendition == DynamicRange::Sdr
    }

    /// The tone-mapping chain for this source, when it is HDR.
    pub(crate) fn tone_map_chain(&self) -> Option<String> {
        (self.source_range() != DynamicRange::Sdr).then(|| tone_map_chain(&self.source))
    }

    /// The tags of a rendition of `range`, and the HDR metadata it carries.
    pub(crate) fn rendition(&self, range: DynamicRange) -> (Tags, Option<&HdrMetadata>) {
        match (self.source_range(), range) {
            (DynamicRange::Sdr, _) => (self.source.completed(self.source_height), None),
            (_, DynamicRange::Sdr) => (Tags::bt709(), None),
            (_, _) => {
                (Tags { range: AVColorRange::AVCOL_RANGE_MPEG, ..self.source }, self.hdr.as_ref())
            }
        }
    }
}

/// Nominal peak luminance (cd/m²) zimg maps to 1.0 in linear light: SDR reference white, so
/// diffuse white in the HDR grade lands at SDR white and only highlights are compressed.
const NOMINAL_PEAK: u32 = 100;

/// The filter chain that tone-maps pictures tagged `source` (PQ or HLG) to 8-bit SDR BT.709,
/// limited range: to linear light (float RGB), BT.2020 → BT.709 primaries, Möbius' curve,
/// back to the BT.709 transfer and matrix.
pub(crate) fn tone_map_chain(source: &Tags) -> String {
    format!(
        "zscale={}:t=linear:npl={NOMINAL_PEAK},format=gbrpf32le,zscale=p=709,\
         tonemap=tonemap=mobius:desat=0,zscale=t=709:m=709:r=limited,format=yuv420p",
        source.zscale_input()
    )
}

/// The encoders' pixel format for a rendition of `range`: 10-bit where HDR is kept.
pub(crate) fn pixel_format(range: DynamicRange) -> Pixel {
    match range {
        DynamicRange::Sdr => Pixel::YUV420P,
        DynamicRange::Pq | DynamicRange::Hlg => Pixel::YUV420P10LE,
    }
}

/// Whether a decoded picture format is full-range YUV that the scaler does not know to be
/// full range by its format alone (it is told by [`full_range_input`]).
pub(crate) fn full_range_input(format: Pixel, range: ffmpeg_next::color::Range) -> bool {
    let j_format = matches!(
        AVPixelFormat::from(format),
        AVPixelFormat::AV_PIX_FMT_YUVJ420P
            | AVPixelFormat::AV_PIX_FMT_YUVJ422P
            | AVPixelFormat::AV_PIX_FMT_YUVJ444P
            | AVPixelFormat::AV_PIX_FMT_YUVJ440P
            | AVPixelFormat::AV_PIX_FMT_YUVJ411P
    );
    !j_format && range == ffmpeg_next::color::Range::JPEG
}

/// HDR static metadata (SMPTE ST 2086 mastering display, CTA-861.3 content light levels) of a
/// source: HEVC and AV1 carry it in the bitstream, so it is read from a decoded picture.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HdrMetadata {
    /// Red, green, blue and white point chromaticities (x, y), then max and min luminance
    /// (cd/m²).
    mastering: Option<([[f64; 2]; 4], f64, f64)>,
    /// Maximum content light level and maximum frame-average light level (cd/m²).
    light: Option<(u32, u32)>,
}

impl HdrMetadata {
    pub(crate) fn of(picture: &ffmpeg_next::frame::Video) -> HdrMetadata {
        use ffmpeg_next::frame::side_data::Type;
        let light = picture.side_data(Type::ContentLightLevel).map(|d| words(d.data()));
        HdrMetadata {
            mastering: picture
                .side_data(Type::MasteringDisplayMetadata)
                .and_then(|d| mastering(d.data())),
            light: match light.as_deref() {
                Some([max_cll, max_fall, ..]) => Some((*max_cll as u32, *max_fall as u32)),
                _ => None,
            },
        }
    }

    /// `x265-params` entries carrying it (x265's units: 0.00002 for chromaticities, 0.0001
    /// cd/m² for luminance).
    pub(crate) fn x265_params(&self) -> String {
        let mut params = String::new();
        if let Some((points, max, min)) = &self.mastering {
            let p =
                |[x, y]: [f64; 2]| format!("({},{})", (x * 50000.0).round(), (y * 50000.0).round());
            let [r, g, b, white] = *points;
            params.push_str(&format!(
                ":master-display=G{}B{}R{}WP{}L({},{})",
                p(g),
                p(b),
                p(r),
                p(white),
                (max * 10000.0).round(),
                (min * 10000.0).round()
            ));
        }
        if let Some((max_cll, max_fall)) = self.light {
            params.push_str(&format!(":max-cll={max_cll},{max_fall}"));
        }
        params
    }

    /// `svtav1-params` entries carrying it (SVT-AV1 takes plain numbers).
    pub(crate) fn svtav1_params(&self) -> String {
        let mut params = Vec::new();
        if let Some((points, max, min)) = &self.mastering {
            let p = |[x, y]: [f64; 2]| format!("({x:.4},{y:.4})");
            let [r, g, b, white] = *points;
            params.push(format!(
                "mastering-display=G{}B{}R{}WP{}L({max:.4},{min:.4})",
                p(g),
                p(b),
                p(r),
                p(white)
            ));
        }
        if let Some((max_cll, max_fall)) = self.light {
            params.push(format!("content-light={max_cll},{max_fall}"));
        }
        params.join(":")
    }
}

/// The native-endian 32-bit words of a side data payload.
fn words(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(4)
        .map(|w| i64::from(i32::from_ne_bytes(w.try_into().expect("4 bytes"))))
        .collect()
}

/// An `AVMasteringDisplayMetadata`: display primaries (R, G, B) and white point as rationals,
/// min and max luminance as rationals, then whether each half is present.
fn mastering(bytes: &[u8]) -> Option<([[f64; 2]; 4], f64, f64)> {
    let w = words(bytes);
    if w.len() < 22 || w[20] == 0 || w[21] == 0 {
        return None;
    }
    let ratio = |at: usize| if w[at + 1] == 0 { 0.0 } else { w[at] as f64 / w[at + 1] as f64 };
    let point = |at: usize| [ratio(at), ratio(at + 2)];
    Some(([point(0), point(4), point(8), point(12)], ratio(18), ratio(16)))
}

/// Tells `scaler` its input is full range (a `yuv420p` picture flagged full range, as some
/// Android phones record): the output stays limited range, as it is tagged.
pub(crate) fn expect_full_range(scaler: &mut ffmpeg_next::software::scaling::Context) {
    // SAFETY: the scaler is ours and initialised; sws_getColorspaceDetails fills the four
    // pointers with its current settings, which are written back with the source range set.
    unsafe {
        let context = scaler.as_mut_ptr();
        let (mut inv_table, mut table) = (std::ptr::null_mut(), std::ptr::null_mut());
        let (mut src_range, mut dst_range, mut brightness, mut contrast, mut saturation) =
            (0, 0, 0, 0, 0);
        let got = ffmpeg_next::ffi::sws_getColorspaceDetails(
            context,
            &mut inv_table,
            &mut src_range,
            &mut table,
            &mut dst_range,
            &mut brightness,
            &mut contrast,
            &mut saturation,
        );
        if got >= 0 {
            ffmpeg_next::ffi::sws_setColorspaceDetails(
                context, inv_table, 1, table, 0, brightness, contrast, saturation,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(
        primaries: AVColorPrimaries,
        transfer: AVColorTransferCharacteristic,
        matrix: AVColorSpace,
    ) -> Tags {
        Tags { primaries, transfer, matrix, range: AVColorRange::AVCOL_RANGE_UNSPECIFIED }
    }

    #[test]
    fn unspecified_colours_are_completed_as_players_assume_them() {
        let unknown = tags(
            AVColorPrimaries::AVCOL_PRI_UNSPECIFIED,
            AVColorTransferCharacteristic::AVCOL_TRC_UNSPECIFIED,
            AVColorSpace::AVCOL_SPC_UNSPECIFIED,
        );
        assert_eq!(unknown.completed(1080).matrix, AVColorSpace::AVCOL_SPC_BT709);
        assert_eq!(unknown.completed(576).matrix, AVColorSpace::AVCOL_SPC_BT470BG);
        assert_eq!(unknown.completed(480).matrix, AVColorSpace::AVCOL_SPC_SMPTE170M);
        assert_eq!(unknown.completed(480).range, AVColorRange::AVCOL_RANGE_MPEG);
        // What the source says wins, whatever its size.
        let sd_in_hd = tags(
            AVColorPrimaries::AVCOL_PRI_SMPTE170M,
            AVColorTransferCharacteristic::AVCOL_TRC_SMPTE170M,
            AVColorSpace::AVCOL_SPC_SMPTE170M,
        );
        assert_eq!(
            sd_in_hd.completed(1080),
            Tags { range: AVColorRange::AVCOL_RANGE_MPEG, ..sd_in_hd }
        );
    }

    #[test]
    fn hdr_transfers_are_told_apart_and_tone_mapped_from_what_they_are() {
        let pq = tags(
            AVColorPrimaries::AVCOL_PRI_BT2020,
            AVColorTransferCharacteristic::AVCOL_TRC_SMPTE2084,
            AVColorSpace::AVCOL_SPC_BT2020_NCL,
        );
        let hlg = Tags { transfer: AVColorTransferCharacteristic::AVCOL_TRC_ARIB_STD_B67, ..pq };
        assert_eq!(pq.dynamic_range(), DynamicRange::Pq);
        assert_eq!(hlg.dynamic_range(), DynamicRange::Hlg);
        assert_eq!(Tags::bt709().dynamic_range(), DynamicRange::Sdr);
        assert!(tone_map_chain(&pq).starts_with("zscale=tin=smpte2084:pin=2020:min=bt2020nc"));
        assert!(tone_map_chain(&hlg).starts_with("zscale=tin=arib-std-b67:pin=2020"));
        assert!(tone_map_chain(&hlg).ends_with("format=yuv420p"));
    }

    /// An SDR source is left as it is: no tone-mapping filter (the normalizer then skips its
    /// filter graph altogether), and its renditions keep its own tags.
    #[test]
    fn sdr_sources_get_no_filter() {
        for source in [Tags::bt709(), Tags::of(&codec::Parameters::new())] {
            let plan = ColourPlan::new(source, 1080);
            assert_eq!(plan.tone_map_chain(), None);
            assert!(!plan.tone_maps(DynamicRange::Sdr));
            assert_eq!(plan.rendition(DynamicRange::Sdr).0, source.completed(1080));
        }
    }
}
