//! Loopback ports for local networks (devnets, tests, benchmarks).

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::sync::Mutex;

/// Ports handed out from here lie below Linux's default ephemeral range (32768-60999), so the
/// kernel never gives one to an outbound connection between this check and the moment the
/// caller's process binds it (with ports from `bind(0)`, a node's own peer connections sometimes
/// took the port another node was about to listen on). Each port is handed out once per process.
const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A loopback TCP port that is free now and was not handed out before in this process.
pub fn free_loopback_port() -> std::io::Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let span = u64::from(RANGE.end - RANGE.start);
    for _ in 0..1000 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = RANGE.start + (random % span) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        let given = given.get_or_insert_with(HashSet::new);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    // Everything tried was taken: fall back to a port the kernel picks.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_below_the_ephemeral_range_and_never_repeat() {
        let ports: Vec<u16> = (0..50).map(|_| free_loopback_port().unwrap()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for p in ports {
            assert!(RANGE.contains(&p), "{p}");
            assert!(TcpListener::bind(("127.0.0.1", p)).is_ok());
        }
    }
}
