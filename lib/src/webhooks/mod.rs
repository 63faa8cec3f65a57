//! Webhooks: destination checks (SSRF guard) now; Standard Webhooks signing and delivery land
//! with the dispatcher.

mod destination;

pub use self::destination::{DestinationError, check_url, is_public_ip};
