//! Tenants' webhook signing secrets are sealed in Redis with AES-256-GCM under
//! `[webhooks] secret_key`: a copy of Redis (a backup, an AOF file, a replica) then holds no
//! secret that could sign a webhook. Values are `sealed:v1:<base64(nonce ‖ ciphertext ‖ tag)>`;
//! plaintext ones (written before a key was configured) are still read, and resealed.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;

const PREFIX: &str = "sealed:v1:";

/// The sealing key, if one is configured.
pub struct AtRest(Option<LessSafeKey>);

impl std::fmt::Debug for AtRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AtRest").field(&self.0.is_some()).finish()
    }
}

/// Why a stored secret cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the webhook secret is sealed, but no webhooks.secret_key is configured")]
    NoKey,
    #[error("the webhook secret cannot be opened with this webhooks.secret_key")]
    WrongKey,
}

impl AtRest {
    /// From `secret_key` (64 hex digits; empty: secrets are stored in plaintext).
    pub fn new(secret_key: &str) -> Result<AtRest, String> {
        if secret_key.is_empty() {
            return Ok(AtRest(None));
        }
        let bytes = hex::decode(secret_key)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or("must be 64 hex digits (32 random bytes, e.g. `openssl rand -hex 32`)")?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "not an AES-256 key")?;
        Ok(AtRest(Some(LessSafeKey::new(key))))
    }

    /// What to store for `secret`.
    pub fn seal(&self, secret: &str) -> String {
        let Some(key) = &self.0 else { return secret.to_owned() };
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source is available");
        let mut sealed = secret.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed,
        )
        .expect("sealing a short secret cannot fail");
        let mut stored = nonce.to_vec();
        stored.extend(sealed);
        format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(stored))
    }

    /// The secret in `stored`; `Ok((secret, true))` when it was plaintext under a configured
    /// key (the caller stores it sealed).
    pub fn open(&self, stored: &str) -> Result<(String, bool), SealError> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            return Ok((stored.to_owned(), self.0.is_some()));
        };
        let key = self.0.as_ref().ok_or(SealError::NoKey)?;
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SealError::WrongKey)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::WrongKey);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[..NONCE_LEN]);
        let opened = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut bytes[NONCE_LEN..],
            )
            .map_err(|_| SealError::WrongKey)?;
        let secret = String::from_utf8(opened.to_vec()).map_err(|_| SealError::WrongKey)?;
        Ok((secret, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let key = "11".repeat(32);
        let at_rest = AtRest::new(&key).unwrap();
        let sealed = at_rest.seal("whsec_abc");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("whsec_abc"));
        assert_ne!(sealed, at_rest.seal("whsec_abc"), "a fresh nonce each time");
        assert_eq!(at_rest.open(&sealed).unwrap(), ("whsec_abc".to_owned(), false));
        let other = AtRest::new(&"22".repeat(32)).unwrap();
        assert!(matches!(other.open(&sealed), Err(SealError::WrongKey)));
        assert!(matches!(AtRest::new("").unwrap().open(&sealed), Err(SealError::NoKey)));
        // Written before a key was configured: read, and flagged for resealing.
        assert_eq!(at_rest.open("whsec_old").unwrap(), ("whsec_old".to_owned(), true));
        assert!(AtRest::new("not hex").is_err());
    }
}
