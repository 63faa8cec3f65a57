//! HLS media playlists as tcoder joins them: a part's playlist parsed, the codec header of an
//! fMP4 initialization segment, and the joined playlist's text. One code for the stitch (the
//! engine joining a split title's parts into its final set) and for the progressive playlists
//! the API serves while the title still encodes: both list the same segments, under the same
//! names and initialization segments, so a player holding the progressive playlist finds
//! every segment where it was when the set completes.

use std::fmt::Write as _;

/// One media playlist of a part (a chunk's rendition, an audio range's track).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPlaylist {
    /// Its `EXT-X-MAP` URI, when it has one (fMP4).
    pub init: Option<String>,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The `EXTINF` duration as the muxer wrote it (copied, never reformatted).
    pub duration: String,
    /// A plain file name in the playlist's folder.
    pub name: String,
}

impl Segment {
    pub fn secs(&self) -> f64 {
        self.duration.parse().unwrap_or(0.0)
    }
}

/// Parses a media playlist tcoder's engine wrote: segments must be plain file names in the
/// playlist's own folder (anything else is refused, not followed).
pub fn parse_media(text: &str) -> Result<MediaPlaylist, String> {
    let mut playlist = MediaPlaylist { init: None, segments: Vec::new() };
    let mut duration: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            let init = rest.split('"').next().unwrap_or_default();
            if !is_plain_name(init) {
                return Err(format!("unexpected initialization segment {init}"));
            }
            playlist.init = Some(init.to_owned());
        } else if let Some(rest) = line.strip_prefix("#EXTINF:") {
            duration = rest.split(',').next().map(str::to_owned);
        } else if !line.is_empty() && !line.starts_with('#') {
            match duration.take() {
                Some(duration) if is_plain_name(line) && duration.parse::<f64>().is_ok() => {
                    playlist.segments.push(Segment { duration, name: line.to_owned() });
                }
                _ => return Err(format!("unexpected line {line}")),
            }
        }
    }
    if playlist.segments.is_empty() {
        return Err("no segments".to_owned());
    }
    Ok(playlist)
}

/// A file name of one folder: letters, digits, `_`, `-` and `.`, not starting with a dot.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The `stsd` box (sample descriptions: codec and its header) of an fMP4 initialization
/// segment, found through `moov/trak/mdia/minf/stbl`. Parts' initialization segments differ
/// in their edit lists; where their `stsd` is the same, the first one serves them all.
pub fn sample_description(init: &[u8]) -> Option<&[u8]> {
    let mut scope = init;
    for name in [b"moov", b"trak", b"mdia", b"minf", b"stbl"] {
        scope = child_box(scope, name)?.get(8..)?;
    }
    child_box(scope, b"stsd")
}

/// The first box named `name` in `data` (a sequence of boxes), header included.
fn child_box<'a>(mut data: &'a [u8], name: &[u8; 4]) -> Option<&'a [u8]> {
    while data.len() >= 8 {
        let size = usize::try_from(u32::from_be_bytes(data[..4].try_into().ok()?)).ok()?;
        if size < 8 || size > data.len() {
            return None;
        }
        if &data[4..8] == name {
            return Some(&data[..size]);
        }
        data = &data[size..];
    }
    None
}

/// The joined playlist's name for part `n`'s initialization segment (named only where the
/// part's codec header differs from the part's before).
pub fn init_name(n: usize) -> String {
    if n == 0 { "init.mp4".to_owned() } else { format!("init_{n}.mp4") }
}

/// One part's rendition, to be joined: its playlist and its initialization segment's `stsd`.
#[derive(Debug, Clone, Copy)]
pub struct PartRendition<'a> {
    pub playlist: &'a MediaPlaylist,
    pub codec: Option<&'a [u8]>,
}

/// What a joined playlist is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Listing {
    /// The whole title (`VOD`, `EXT-X-ENDLIST`).
    Complete,
    /// While the title encodes (`EVENT`: segments are only ever added; players start at its
    /// beginning, `EXT-X-START:TIME-OFFSET=0`), the segments that start before `until`
    /// seconds.
    Progressive { until: f64 },
}

/// A joined media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub text: String,
    /// The parts whose initialization segment it names ([`init_name`]).
    pub inits: Vec<usize>,
    /// Seconds its segments last.
    pub secs: f64,
}

/// A progressive listing leaves out a segment starting this close to its end: the other
/// kind of media (audio, video) does not reach past it yet.
const EDGE_SECS: f64 = 0.1;

/// Joins `parts` (in title order) into one media playlist: their segments one after another,
/// under the first part's initialization segment and another wherever a part's codec header
/// differs from the one before.
pub fn join(parts: &[PartRendition<'_>], listing: Listing) -> Joined {
    let until = match listing {
        Listing::Complete => f64::INFINITY,
        Listing::Progressive { until } => until - EDGE_SECS,
    };
    let (mut body, mut inits) = (String::new(), Vec::new());
    let (mut secs, mut longest) = (0.0f64, 0.0f64);
    let mut previous: Option<Option<&[u8]>> = None;
    'parts: for (n, part) in parts.iter().enumerate() {
        if secs >= until {
            break;
        }
        if let Some(_init) = &part.playlist.init
            && (previous != Some(part.codec) || part.codec.is_none())
        {
            let _ = writeln!(body, "#EXT-X-MAP:URI=\"{}\"", init_name(n));
            inits.push(n);
            previous = Some(part.codec);
        }
        for segment in &part.playlist.segments {
            if secs >= until {
                break 'parts;
            }
            let _ = writeln!(body, "#EXTINF:{},\n{}", segment.duration, segment.name);
            secs += segment.secs();
            longest = longest.max(segment.secs());
        }
    }
    let mut text = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n",
        longest.ceil() as u64
    );
    match listing {
        Listing::Complete => text.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n"),
        Listing::Progressive { .. } => {
            text.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-START:TIME-OFFSET=0\n");
        }
    }
    text.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    text.push_str(&body);
    if listing == Listing::Complete {
        text.push_str("#EXT-X-ENDLIST\n");
    }
    Joined { text, inits, secs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playlist(first: u32, count: u32, duration: &str) -> MediaPlaylist {
        let mut text = String::from("#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n");
        for n in first..first + count {
            text.push_str(&format!("#EXTINF:{duration},\nseg_{n:05}.m4s\n"));
        }
        parse_media(&text).unwrap()
    }

    #[test]
    fn a_progressive_listing_is_a_prefix_of_the_complete_one() {
        let parts =
            [playlist(0, 1, "4.000000"), playlist(1, 15, "4.000000"), playlist(16, 3, "2.5")];
        let codec: &[u8] = b"stsd-a";
        let renditions: Vec<PartRendition<'_>> =
            parts.iter().map(|p| PartRendition { playlist: p, codec: Some(codec) }).collect();
        let complete = join(&renditions, Listing::Complete);
        assert!(complete.text.ends_with("#EXT-X-ENDLIST\n"));
        assert_eq!(complete.inits, [0], "one codec header: one initialization segment");
        assert!((complete.secs - 71.5).abs() < 1e-9);
        // While only the first part is in (4 s), and then the first two.
        for (available, until) in [(1, 4.0), (2, 64.0), (3, 71.5)] {
            let progressive = join(&renditions[..available], Listing::Progressive { until });
            assert!(progressive.text.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"));
            assert!(!progressive.text.contains("ENDLIST"));
            // Every segment line of the progressive listing is the complete one's, in order.
            let body = |text: &str| -> Vec<String> {
                text.lines()
                    .skip_while(|l| !l.starts_with("#EXT-X-MAP"))
                    .map(str::to_owned)
                    .collect()
            };
            let (so_far, all) = (body(&progressive.text), body(&complete.text));
            assert_eq!(so_far[..], all[..so_far.len()], "after {available} parts");
            assert!(progressive.text.contains("#EXT-X-TARGETDURATION:4\n"));
        }
        // Limited by the other media: only segments starting before it ends.
        let limited = join(&renditions, Listing::Progressive { until: 8.02 });
        assert_eq!(limited.text.matches("#EXTINF").count(), 2);
    }

    #[test]
    fn a_part_with_another_codec_header_gets_its_own_initialization_segment() {
        let parts = [playlist(0, 2, "4.0"), playlist(2, 2, "4.0"), playlist(4, 2, "4.0")];
        let (a, b): (&[u8], &[u8]) = (b"stsd-a", b"stsd-b");
        let renditions = [
            PartRendition { playlist: &parts[0], codec: Some(a) },
            PartRendition { playlist: &parts[1], codec: Some(b) },
            PartRendition { playlist: &parts[2], codec: Some(b) },
        ];
        let joined = join(&renditions, Listing::Complete);
        assert_eq!(joined.inits, [0, 1]);
        assert!(joined.text.contains("#EXT-X-MAP:URI=\"init_1.mp4\"\n#EXTINF:4.0,\nseg_00002.m4s"));
    }

    #[test]
    fn only_plain_file_names_are_segments() {
        for bad in ["../other/seg.m4s", "/abs.m4s", "https://evil/seg.m4s", ".hidden", "a/b.m4s"] {
            let text = format!("#EXTM3U\n#EXTINF:4.0,\n{bad}\n");
            assert!(parse_media(&text).is_err(), "{bad}");
        }
        assert!(
            parse_media("#EXTM3U\n#EXT-X-MAP:URI=\"../init.mp4\"\n#EXTINF:4,\na.m4s\n").is_err()
        );
        assert!(parse_media("#EXTM3U\n#EXTINF:x,\na.m4s\n").is_err(), "a duration is a number");
    }
}
