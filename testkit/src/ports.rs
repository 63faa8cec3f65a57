//! Free loopback ports.

use std::net::TcpListener;

/// A port on 127.0.0.1 that was free a moment ago. Servers that must be told a port up front
/// use it; a collision (another process grabbing it in between) shows as a failed start,
/// which the starters retry with a new port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("can bind an ephemeral port on 127.0.0.1")
}
