//! Signed playback (`[ingest] delivery = "signed"`): outputs stay private in the bucket and are
//! served through ingest's `/v1/play/<token>/<key>` route. One token covers one attempt's
//! whole output tree (`outputs/<tenant>/<job>/<epoch>/`) until it expires, so an HLS player
//! that resolves the playlists' relative URIs against the playlist's own URL carries the token
//! into every variant playlist and segment without any rewriting.
//!
//! Token: base64url( expiry (8 bytes, big-endian Unix seconds) ‖ first 16 bytes of
//! HMAC-SHA256(secret, prefix ‖ expiry) ).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::s3::keys::OUTPUTS_PREFIX;

/// Bytes of the MAC kept in a token (128 bits).
const MAC_BYTES: usize = 16;

/// Why a playback request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlaybackError {
    #[error("the playback token is malformed or does not match")]
    Invalid,
    #[error("the playback token has expired")]
    Expired,
    #[error("the key is not an output")]
    NotAnOutput,
}

/// The attempt prefix an output key lies under: `outputs/<tenant>/<job>/<epoch>/`.
pub fn attempt_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(OUTPUTS_PREFIX)?;
    let mut end = OUTPUTS_PREFIX.len();
    let mut parts = rest.splitn(4, '/');
    for _ in 0..3 {
        let part = parts.next()?;
        if part.is_empty() || part == "." || part == ".." {
            return None;
        }
        end += part.len() + 1;
    }
    // Something must follow the prefix, and nothing may climb out of it.
    let leaf = parts.next()?;
    if leaf.is_empty() || leaf.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        return None;
    }
    Some(&key[..end])
}

fn mac(secret: &[u8], prefix: &str, expires_at: u64) -> [u8; MAC_BYTES] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(prefix.as_bytes());
    mac.update(&expires_at.to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut short = [0u8; MAC_BYTES];
    short.copy_from_slice(&full[..MAC_BYTES]);
    short
}

/// A token for every object under `prefix`, valid until `expires_at` (Unix seconds).
pub fn sign(secret: &[u8], prefix: &str, expires_at: u64) -> String {
    let mut bytes = expires_at.to_be_bytes().to_vec();
    bytes.extend_from_slice(&mac(secret, prefix, expires_at));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Checks that `token` grants `key` at `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    token: &str,
    key: &crate::s3::Key,
    now: u64,
) -> Result<(), PlaybackError> {
    let prefix = attempt_prefix(key.as_str()).ok_or(PlaybackError::NotAnOutput)?;
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| PlaybackError::Invalid)?;
    if bytes.len() != 8 + MAC_BYTES {
        return Err(PlaybackError::Invalid);
    }
    let mut expiry = [0u8; 8];
    expiry.copy_from_slice(&bytes[..8]);
    let expires_at = u64::from_be_bytes(expiry);
    let expected = mac(secret, prefix, expires_at);
    // Constant time: the MAC must not leak through timing.
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &bytes[8..])) {
        return Err(PlaybackError::Invalid);
    }
    if now >= expires_at {
        return Err(PlaybackError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "outputs/acme/job_1/2/hls/360p/seg_00001.m4s";

    fn verify(secret: &[u8], token: &str, key: &str, now: u64) -> Result<(), PlaybackError> {
        super::verify(secret, token, &crate::s3::Key::parse(key).unwrap(), now)
    }

    #[test]
    fn a_token_covers_one_attempt_until_it_expires() {
        let secret = b"s3cr3t";
        let token = sign(secret, "outputs/acme/job_1/2/", 1_000);
        assert_eq!(verify(secret, &token, KEY, 999), Ok(()));
        assert_eq!(verify(secret, &token, "outputs/acme/job_1/2/hls/master.m3u8", 10), Ok(()));
        assert_eq!(verify(secret, &token, KEY, 1_000), Err(PlaybackError::Expired));
        // Another attempt, job or tenant; another secret; a tampered token.
        for other in ["outputs/acme/job_1/3/x", "outputs/acme/job_2/2/x", "outputs/evil/job_1/2/x"]
        {
            assert_eq!(verify(secret, &token, other, 10), Err(PlaybackError::Invalid), "{other}");
        }
        assert_eq!(verify(b"other", &token, KEY, 10), Err(PlaybackError::Invalid));
        let mut tampered = token.clone().into_bytes();
        tampered[3] ^= 1;
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(verify(secret, &tampered, KEY, 10).is_err());
    }

    #[test]
    fn only_keys_inside_an_attempt_are_outputs() {
        assert_eq!(attempt_prefix(KEY), Some("outputs/acme/job_1/2/"));
        for bad in [
            "uploads/acme/job_1/source",
            "outputs/acme/job_1/2/",
            "outputs/acme/job_1/2/../3/x",
            "outputs/acme/../job_1/2/x",
            "outputs//job_1/2/x",
        ] {
            assert_eq!(attempt_prefix(bad), None, "{bad}");
        }
    }
}
