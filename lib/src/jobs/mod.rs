//! Jobs: what a user asked for and where it stands.

mod priority;

pub use self::priority::Priority;
