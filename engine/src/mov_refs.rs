//! Tracks of an MP4/MOV whose media lives in *another* file. `QuickTime` lets a track's data
//! reference (`dref`) point elsewhere through a Mac alias record (`alis` without the
//! self-contained flag); FFmpeg then skips the track (it never opens other files here) and the
//! track yields no samples — an output would get an empty or silent track with no word why.
//! The probe reads the references itself, so such tracks are refused or dropped with a
//! warning instead.
//!
//! Only the `moov` box is read, with bounded sizes; anything unexpected means "no external
//! references found" (FFmpeg's own checks still apply).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use tcoder::isobmff::{boxes, child};

/// A `moov` larger than this is not read (it would be a very long or hostile file; FFmpeg
/// still opens it, external references then go unnoticed).
const MAX_MOOV_BYTES: u64 = 64 << 20;
/// Top-level boxes looked at before giving up on finding `moov`.
const MAX_TOP_LEVEL_BOXES: usize = 1024;

/// Track ids (`tkhd` `track_ID`, FFmpeg's stream `id`) whose data references point outside
/// the file.
pub(crate) fn external_tracks(path: &Path) -> Vec<u32> {
    read_moov(path).map(|moov| tracks(&moov)).unwrap_or_default()
}

fn read_moov(path: &Path) -> Option<Vec<u8>> {
    // Through the reader that waits for bytes still downloading (a hole reads as zeros).
    let mut file = crate::source::SourceFile::open(path).ok()?;
    let length = file.len();
    let mut offset = 0u64;
    for _ in 0..MAX_TOP_LEVEL_BOXES {
        if offset + 8 > length {
            return None;
        }
        file.seek(SeekFrom::Start(offset)).ok()?;
        let mut header = [0u8; 16];
        file.read_exact(&mut header[..8]).ok()?;
        let mut size = u64::from(u32::from_be_bytes(header[..4].try_into().ok()?));
        let mut header_len = 8;
        if size == 1 {
            file.read_exact(&mut header[8..16]).ok()?;
            size = u64::from_be_bytes(header[8..16].try_into().ok()?);
            header_len = 16;
        } else if size == 0 {
            size = length - offset;
        }
        if size < header_len {
            return None;
        }
        if &header[4..8] == b"moov" {
            let body = size - header_len;
            if body > MAX_MOOV_BYTES || offset + size > length {
                return None;
            }
            let mut moov = vec![0u8; body as usize];
            file.read_exact(&mut moov).ok()?;
            return Some(moov);
        }
        offset = offset.checked_add(size)?;
    }
    None
}

fn tracks(moov: &[u8]) -> Vec<u32> {
    boxes(moov)
        .filter(|(kind, _)| *kind == b"trak")
        .filter_map(|(_, trak)| {
            let id = track_id(child(trak, b"tkhd")?)?;
            let dref = child(trak, b"mdia")
                .and_then(|m| child(m, b"minf"))
                .and_then(|m| child(m, b"dinf"))
                .and_then(|d| child(d, b"dref"))?;
            external(dref).then_some(id)
        })
        .collect()
}

fn track_id(tkhd: &[u8]) -> Option<u32> {
    // Full box: version (1) + flags (3); then creation and modification times (4 or 8 bytes
    // each by version), then the track id.
    let at = if *tkhd.first()? == 1 { 4 + 16 } else { 4 + 8 };
    Some(u32::from_be_bytes(tkhd.get(at..at + 4)?.try_into().ok()?))
}

/// Whether the first data reference (the one samples use) is an alias to another file, the
/// kind FFmpeg skips.
fn external(dref: &[u8]) -> bool {
    // Full box header (4) + entry count (4), then the entries as boxes.
    let Some(entries) = dref.get(8..) else { return false };
    match boxes(entries).next() {
        Some((kind, body)) => {
            let self_contained = body.get(3).is_some_and(|flags| flags & 1 == 1);
            kind == b"alis" && !self_contained && body.len() + 8 > 150
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_box(kind: &[u8], flags: u8, body: &[u8]) -> Vec<u8> {
        let mut inner = vec![0, 0, 0, flags];
        inner.extend_from_slice(body);
        plain_box(kind, &inner)
    }

    fn plain_box(kind: &[u8], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn trak(id: u32, entry: Vec<u8>) -> Vec<u8> {
        let mut tkhd = vec![0u8; 8];
        tkhd.extend_from_slice(&id.to_be_bytes());
        tkhd.extend_from_slice(&[0u8; 68]);
        let mut dref_body = 1u32.to_be_bytes().to_vec();
        dref_body.extend_from_slice(&entry);
        let dref = full_box(b"dref", 0, &dref_body);
        let dinf = plain_box(b"dinf", &dref);
        let minf = plain_box(b"minf", &dinf);
        let mdia = plain_box(b"mdia", &minf);
        let mut body = full_box(b"tkhd", 3, &tkhd);
        body.extend_from_slice(&mdia);
        plain_box(b"trak", &body)
    }

    #[test]
    fn only_alias_references_to_other_files_count() {
        let in_file = full_box(b"url ", 1, &[]);
        let alias_elsewhere = full_box(b"alis", 0, &[0u8; 200]);
        let alias_self = full_box(b"alis", 1, &[0u8; 200]);
        let mut moov = trak(1, in_file);
        moov.extend(trak(2, alias_elsewhere));
        moov.extend(trak(3, alias_self));
        assert_eq!(tracks(&moov), vec![2]);
        // Truncated or garbage boxes find nothing rather than failing.
        assert_eq!(tracks(&moov[..moov.len() / 3]), Vec::<u32>::new());
        assert_eq!(tracks(&[0xff; 64]), Vec::<u32>::new());
    }
}
