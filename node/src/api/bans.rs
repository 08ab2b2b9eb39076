//! Clients that keep asking past their limits are cut off for a while.
//!
//! A refusal (`RESOURCE_EXHAUSTED` from a read budget or the stream limits) is cheap, but not free:
//! a client that ignores it and keeps asking still costs a request's parsing and answer each
//! time. After [`REFUSALS_BEFORE_BAN`] refusals within [`REFUSAL_WINDOW`], the client address is
//! banned for [`BAN`]: its open connections are closed at their next read and new ones are
//! closed at accept, which costs the node almost nothing. A well-behaved client (one that slows
//! down when refused) is never banned.

use crate::metrics::NodeMetrics;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Refusals within [`REFUSAL_WINDOW`] that get a client address banned.
pub const REFUSALS_BEFORE_BAN: u32 = 200;
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(10);
/// How long a banned address stays banned.
pub const BAN: Duration = Duration::from_secs(30);
/// Addresses remembered at most (the oldest entries are dropped beyond it).
const REMEMBERED: usize = 4096;

/// Refusals counted for one address in the current window.
#[derive(Clone, Copy, Debug)]
struct Refusals {
    since: Instant,
    count: u32,
}

/// What one more refusal means for an address: its new count, and whether it is now banned.
fn count_refusal(prev: Option<Refusals>, now: Instant) -> (Refusals, bool) {
    let current = match prev {
        Some(r) if now.duration_since(r.since) < REFUSAL_WINDOW => Refusals {
            since: r.since,
            count: r.count.saturating_add(1),
        },
        _ => Refusals {
            since: now,
            count: 1,
        },
    };
    (current, current.count >= REFUSALS_BEFORE_BAN)
}

#[derive(Default)]
struct State {
    refusals: HashMap<IpAddr, Refusals>,
    banned: HashMap<IpAddr, Instant>,
}

pub struct ClientBans {
    state: parking_lot::Mutex<State>,
    /// Entries in `state.banned`, kept under its lock: every read of every API connection asks
    /// [`ClientBans::is_banned`], which takes the lock only when someone is banned.
    banned: AtomicUsize,
    metrics: Arc<NodeMetrics>,
}

impl ClientBans {
    pub fn new(metrics: Arc<NodeMetrics>) -> Arc<ClientBans> {
        Arc::new(ClientBans {
            state: parking_lot::Mutex::new(State::default()),
            banned: AtomicUsize::new(0),
            metrics,
        })
    }

    /// Records that `client` was refused; bans it once it keeps going.
    pub fn refused(&self, client: Option<IpAddr>) {
        let Some(ip) = client.map(|ip| ip.to_canonical()) else {
            return;
        };
        let now = Instant::now();
        let mut s = self.state.lock();
        if s.refusals.len() >= REMEMBERED {
            s.refusals
                .retain(|_, r| now.duration_since(r.since) < REFUSAL_WINDOW);
        }
        let (current, ban) = count_refusal(s.refusals.get(&ip).copied(), now);
        if !ban {
            s.refusals.insert(ip, current);
            return;
        }
        s.refusals.remove(&ip);
        if s.banned.len() >= REMEMBERED {
            s.banned.retain(|_, until| *until > now);
        }
        let newly = s.banned.insert(ip, now + BAN).is_none();
        self.banned.store(s.banned.len(), Ordering::Release);
        if newly {
            self.metrics.api_clients_banned.inc();
            tracing::info!(%ip, "banned an API client that kept asking past its limits");
        }
    }

    pub fn is_banned(&self, ip: IpAddr) -> bool {
        if self.banned.load(Ordering::Acquire) == 0 {
            return false;
        }
        let ip = ip.to_canonical();
        let mut s = self.state.lock();
        let banned = match s.banned.get(&ip) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                s.banned.remove(&ip);
                false
            }
            None => false,
        };
        self.banned.store(s.banned.len(), Ordering::Release);
        banned
    }

    /// An accepted connection, or `None` (closed now) when its address is banned.
    pub fn admit(self: &Arc<Self>, io: TcpStream) -> Option<ClientConn> {
        let ip = io.peer_addr().ok()?.ip();
        if self.is_banned(ip) {
            return None;
        }
        Some(ClientConn {
            io,
            ip,
            bans: self.clone(),
        })
    }
}

/// An API connection that ends at its next read once its client address is banned.
pub struct ClientConn {
    io: TcpStream,
    ip: IpAddr,
    bans: Arc<ClientBans>,
}

impl Connected for ClientConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for ClientConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.bans.is_banned(self.ip) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "client banned for asking past its limits",
            )));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_within_the_window_add_up_to_a_ban() {
        let t0 = Instant::now();
        let mut r = None;
        for i in 1..REFUSALS_BEFORE_BAN {
            let (next, ban) = count_refusal(r, t0 + Duration::from_millis(i as u64));
            assert!(!ban, "banned after {i} refusals");
            r = Some(next);
        }
        assert!(count_refusal(r, t0 + Duration::from_secs(1)).1);
    }

    #[test]
    fn a_client_that_slows_down_starts_a_new_window() {
        let t0 = Instant::now();
        let r = Refusals {
            since: t0,
            count: REFUSALS_BEFORE_BAN - 1,
        };
        let (next, ban) = count_refusal(Some(r), t0 + REFUSAL_WINDOW);
        assert!(!ban);
        assert_eq!(next.count, 1);
    }

    #[test]
    fn hostile_a_client_that_ignores_refusals_is_banned_and_others_are_not() {
        let bans = ClientBans::new(Arc::new(NodeMetrics::default()));
        let greedy: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..REFUSALS_BEFORE_BAN {
            bans.refused(Some(greedy));
        }
        bans.refused(Some(other));
        assert!(bans.is_banned(greedy));
        assert!(bans.is_banned("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!bans.is_banned(other));
        assert_eq!(bans.metrics.api_clients_banned.get(), 1);
    }
}
