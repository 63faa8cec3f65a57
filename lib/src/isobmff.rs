//! ISO base media file format (MP4, MOV, fMP4) boxes, read from bytes in memory with every
//! size checked against what is there: a hostile or truncated file ends the walk, never
//! reads past it.

/// The child boxes of `data`: (type, body).
pub fn boxes(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 8 {
            return None;
        }
        let size = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
        let (size, header) = match size {
            0 => (rest.len(), 8),
            1 => {
                let large = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
                (usize::try_from(large).ok()?, 16)
            }
            n => (n, 8),
        };
        if size < header || size > rest.len() {
            return None;
        }
        let kind = &rest[4..8];
        let body = &rest[header..size];
        rest = &rest[size..];
        Some((kind, body))
    })
}

/// The body of the first child box of `kind` in `data`.
pub fn child<'a>(data: &'a [u8], kind: &[u8]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| *k == kind).map(|(_, body)| body)
}
