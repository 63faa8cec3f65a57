//! The canonical object key: the one form of a key every door parses into before anything uses
//! it — store requests, presigned URLs, NATS submissions, watch-folder rules and notifications,
//! playback URLs, part and output prefixes.
//!
//! Why a type and not a prefix test: S3 keys are opaque strings, but the stores tcoder talks to
//! are not all S3. The embedded store maps keys onto a file system, where `a/../b` *is* `b`;
//! HTTP front ends decode `%2e%2e` into `..`; tooling splits on backslashes. A test of the raw
//! string's prefix (`starts_with("outputs/")`) then grants one key and the store serves another.
//! A [`Key`] cannot spell a second object: every segment is a plain name, so the string's
//! prefix *is* the object's folder, and access decisions made on it hold wherever it is used.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest key in bytes (S3's own limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a spelling is not a canonical key. Each names what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is longer than {MAX_KEY_BYTES} bytes")]
    TooLong,
    #[error("the key has an empty segment (a leading, doubled or trailing `/`)")]
    EmptySegment,
    #[error("the key has a `.` or `..` segment")]
    DotSegment,
    #[error("the key contains a backslash")]
    Backslash,
    #[error(
        "the key contains a percent-encoded dot, slash, backslash, percent or control character"
    )]
    EncodedSeparator,
    #[error("the key contains a control character")]
    Control,
    #[error("a folder prefix must end with `/`")]
    NotAFolder,
}

/// A canonical object key: 1–1024 bytes of `/`-separated segments, none empty, `.` or `..`; no
/// backslash, no control character, no percent-encoded `.`, `/`, `\`, `%` or control byte.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Key(String);

/// A canonical folder: empty (the whole bucket) or a [`Key`]'s spelling followed by `/`. Every
/// key that starts with it lies inside it, and only those.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyPrefix(String);

impl Key {
    pub fn parse(spelling: &str) -> Result<Key, KeyError> {
        check(spelling)?;
        Ok(Key(spelling.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this key lies in `folder`.
    pub fn is_in(&self, folder: &KeyPrefix) -> bool {
        self.0.starts_with(&folder.0)
    }

    /// The key relative to `folder`, when it lies in it.
    pub fn relative_to(&self, folder: &KeyPrefix) -> Option<&str> {
        self.0.strip_prefix(&folder.0)
    }

    /// Built by tcoder from parts that are canonical by their own types (tenants, job ids,
    /// numbers): checked in debug builds, never at run time.
    pub(crate) fn assembled(spelling: String) -> Key {
        debug_assert_eq!(check(&spelling), Ok(()), "{spelling}");
        Key(spelling)
    }
}

impl KeyPrefix {
    /// The whole bucket.
    pub fn root() -> KeyPrefix {
        KeyPrefix(String::new())
    }

    pub fn parse(spelling: &str) -> Result<KeyPrefix, KeyError> {
        if spelling.is_empty() {
            return Ok(KeyPrefix::root());
        }
        let folder = spelling.strip_suffix('/').ok_or(KeyError::NotAFolder)?;
        check(folder)?;
        if spelling.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong);
        }
        Ok(KeyPrefix(spelling.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of `name` (one or more segments) inside this folder.
    pub fn join(&self, name: &str) -> Result<Key, KeyError> {
        Key::parse(&format!("{}{name}", self.0))
    }

    /// Whether `other` is this folder or lies inside it.
    pub fn contains(&self, other: &KeyPrefix) -> bool {
        other.0.starts_with(&self.0)
    }

    /// Built from canonical parts; see [`Key::assembled`].
    pub(crate) fn assembled(spelling: String) -> KeyPrefix {
        debug_assert_eq!(KeyPrefix::parse(&spelling).map(|_| ()), Ok(()), "{spelling}");
        KeyPrefix(spelling)
    }
}

fn check(spelling: &str) -> Result<(), KeyError> {
    check_plain(spelling)?;
    // Every layer that might decode the key once more (a proxy, a second front end) must see a
    // canonical key too: `%%32e` is harmless once and `.` after two decodings.
    let mut current = spelling.to_owned();
    for _ in 0..MAX_DECODINGS {
        let decoded: String =
            percent_encoding::percent_decode_str(&current).decode_utf8_lossy().into();
        if decoded == current {
            return Ok(());
        }
        check_plain(&decoded).map_err(|_| KeyError::EncodedSeparator)?;
        current = decoded;
    }
    Err(KeyError::EncodedSeparator)
}

/// Rounds of percent-decoding a key must survive; a key still changing after them is refused.
const MAX_DECODINGS: usize = 4;

fn check_plain(spelling: &str) -> Result<(), KeyError> {
    if spelling.is_empty() {
        return Err(KeyError::Empty);
    }
    if spelling.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong);
    }
    if spelling.chars().any(char::is_control) {
        return Err(KeyError::Control);
    }
    if spelling.contains('\\') {
        return Err(KeyError::Backslash);
    }
    if encodes_a_separator(spelling) {
        return Err(KeyError::EncodedSeparator);
    }
    for segment in spelling.split('/') {
        match segment {
            "" => return Err(KeyError::EmptySegment),
            "." | ".." => return Err(KeyError::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `%XX` anywhere decodes to a byte that would change what the key names once some
/// layer decodes it: `.` (dot segments), `/` and `\` (separators), `%` (a second round of
/// decoding), or a control byte. Other escapes (`%20`, `%C3%A9`) are ordinary characters of a
/// name.
fn encodes_a_separator(spelling: &str) -> bool {
    let bytes = spelling.as_bytes();
    bytes.windows(3).any(|w| {
        w[0] == b'%'
            && match (hex(w[1]), hex(w[2])) {
                (Some(high), Some(low)) => {
                    let byte = high << 4 | low;
                    matches!(byte, b'.' | b'/' | b'\\' | b'%') || byte < 0x20 || byte == 0x7f
                }
                _ => false,
            }
    })
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Key {
    type Error = KeyError;
    fn try_from(spelling: String) -> Result<Key, KeyError> {
        check(&spelling)?;
        Ok(Key(spelling))
    }
}

impl From<Key> for String {
    fn from(key: Key) -> String {
        key.0
    }
}

impl TryFrom<String> for KeyPrefix {
    type Error = KeyError;
    fn try_from(spelling: String) -> Result<KeyPrefix, KeyError> {
        KeyPrefix::parse(&spelling)
    }
}

impl From<KeyPrefix> for String {
    fn from(prefix: KeyPrefix) -> String {
        prefix.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The spellings seen in the attack on the stack (issue 27), and their relatives.
    const REFUSED: &[(&str, KeyError)] = &[
        ("", KeyError::Empty),
        ("outputs/x/../../uploads/a/j/source", KeyError::DotSegment),
        ("uploads/local/../a/job/source", KeyError::DotSegment),
        ("uploads/local/../../outputs/b/job/1/mp4/144p.mp4", KeyError::DotSegment),
        ("uploads/local/./clip.mp4", KeyError::DotSegment),
        ("uploads/local/x/../../a/clip.mp4", KeyError::DotSegment),
        ("incoming/local/../a/file.mp4", KeyError::DotSegment),
        ("..", KeyError::DotSegment),
        ("outputs/%2e%2e/uploads/a/j/source", KeyError::EncodedSeparator),
        ("outputs/%2E%2E/uploads/a/j/source", KeyError::EncodedSeparator),
        ("outputs/.%2e/uploads", KeyError::EncodedSeparator),
        ("outputs/x%2f..%2fuploads", KeyError::EncodedSeparator),
        ("outputs/%252e%252e/uploads", KeyError::EncodedSeparator),
        ("outputs/%5c../uploads", KeyError::EncodedSeparator),
        ("outputs/a%00b", KeyError::EncodedSeparator),
        ("outputs/%%32e%%32e/uploads", KeyError::EncodedSeparator),
        ("uploads/local//../a", KeyError::EmptySegment),
        ("uploads//local/clip.mp4", KeyError::EmptySegment),
        ("/uploads/local/clip.mp4", KeyError::EmptySegment),
        ("uploads/local/", KeyError::EmptySegment),
        ("uploads\\local\\..\\a", KeyError::Backslash),
        ("uploads/local/a\nb", KeyError::Control),
        ("uploads/local/a\0b", KeyError::Control),
        ("uploads/local/a\u{85}b", KeyError::Control),
    ];

    #[test]
    fn every_spelling_seen_in_the_attack_is_refused_with_its_reason() {
        for (spelling, why) in REFUSED {
            assert_eq!(Key::parse(spelling), Err(*why), "{spelling:?}");
        }
        assert_eq!(Key::parse(&"a".repeat(MAX_KEY_BYTES + 1)), Err(KeyError::TooLong));
    }

    #[test]
    fn ordinary_names_are_keys() {
        for good in [
            "uploads/acme/2026/12/clip.mp4",
            "incoming/acme/My Holiday (1).MOV",
            "incoming/acme/50% off.mp4",
            "incoming/acme/a%20b.mp4",
            "incoming/acme/.hidden",
            "incoming/acme/...",
            "incoming/acme/..mp4",
            "incoming/acme/été.mp4",
        ] {
            assert_eq!(Key::parse(good).map(String::from), Ok(good.to_owned()));
        }
        assert!(Key::parse(&"a".repeat(MAX_KEY_BYTES)).is_ok());
    }

    #[test]
    fn a_folder_holds_only_the_keys_inside_it() {
        let folder = KeyPrefix::parse("uploads/acme/").unwrap();
        assert!(Key::parse("uploads/acme/clip.mp4").unwrap().is_in(&folder));
        assert!(!Key::parse("uploads/acmex/clip.mp4").unwrap().is_in(&folder));
        assert_eq!(KeyPrefix::parse("uploads/acme"), Err(KeyError::NotAFolder));
        assert_eq!(KeyPrefix::parse("incoming/../uploads/"), Err(KeyError::DotSegment));
        assert_eq!(KeyPrefix::parse("/"), Err(KeyError::Empty));
        assert_eq!(KeyPrefix::parse(""), Ok(KeyPrefix::root()));
        assert_eq!(folder.join("../globex/x"), Err(KeyError::DotSegment));
        assert_eq!(
            serde_json::from_str::<Key>("\"uploads/a/../b\"").map_err(|e| e.to_string()).err(),
            Some("the key has a `.` or `..` segment".to_owned())
        );
    }

    /// Resolves a spelling the way a file system or an HTTP front end would: percent-decoding
    /// (up to three rounds), backslashes as separators, `.` and `..` segments folded. `None`
    /// when it climbs above the root.
    fn resolve(spelling: &str) -> Option<Vec<String>> {
        let mut decoded = spelling.to_owned();
        for _ in 0..3 {
            decoded = percent_encoding::percent_decode_str(&decoded).decode_utf8_lossy().into();
        }
        let mut out: Vec<String> = Vec::new();
        for segment in decoded.split(['/', '\\']) {
            match segment {
                "" | "." => {}
                ".." => {
                    out.pop()?;
                }
                name => out.push(name.to_owned()),
            }
        }
        Some(out)
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("".to_owned()),
            Just("%2e%2e".to_owned()),
            Just("%2E.".to_owned()),
            Just("%252e%252e".to_owned()),
            Just("..%2f..".to_owned()),
            Just("%5c..".to_owned()),
            Just("a\\..".to_owned()),
            Just("local".to_owned()),
            Just("a".to_owned()),
            Just("b".to_owned()),
            "[a-z0-9._%-]{1,6}",
            "\\PC{1,4}",
        ]
    }

    proptest! {
        /// Whatever a spelling is made of, a key that parses names the object its string says:
        /// resolving it as a file system or a decoding proxy would lands on the same segments,
        /// so a folder test on the string is a folder test on the object.
        #[test]
        fn a_parsed_key_resolves_to_itself(
            segments in proptest::collection::vec(segment(), 1..8),
        ) {
            let spelling = segments.join("/");
            if let Ok(key) = Key::parse(&spelling) {
                let resolved = resolve(key.as_str());
                let segments = key.as_str().split('/').count();
                prop_assert_eq!(resolved.map(|r| r.len()), Some(segments), "{}", key);
            }
        }

        /// A key inside a tenant's folder cannot resolve outside it.
        #[test]
        fn a_key_in_a_folder_resolves_inside_it(
            segments in proptest::collection::vec(segment(), 1..8),
        ) {
            let spelling = format!("uploads/local/{}", segments.join("/"));
            let folder = KeyPrefix::parse("uploads/local/").unwrap();
            if let Ok(key) = Key::parse(&spelling) {
                prop_assert!(key.is_in(&folder));
                let resolved = resolve(key.as_str()).unwrap_or_default();
                prop_assert!(resolved.len() > 2, "{:?}", resolved);
                prop_assert_eq!(&resolved[..2], &["uploads".to_owned(), "local".to_owned()]);
            }
        }
    }
}
