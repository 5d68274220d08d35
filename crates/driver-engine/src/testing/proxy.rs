//! A TCP proxy between the driver and PostgreSQL that a test controls, so
//! that network faults happen when the test says, not when the machine
//! happens to misbehave.
//!
//! Every byte goes through the proxy in both directions. The test can delay
//! each chunk, stall all traffic (bytes are held, connections stay open, as
//! on a partitioned network where nobody resets anything), cut every open
//! connection, refuse new ones, or hold back the `Sync` message of the next
//! statement, which leaves the server inside an open transaction exactly as
//! when a client vanishes between sending a statement and its commit.
//!
//! Faults can also be aimed at the connections open at one moment only
//! (the ones a pool holds), leaving later connections healthy: a statement
//! on an old connection is delayed, or its answer held, while the client's
//! next connection works. That is how a write "reported failed" can still
//! reach the server later, or a commit lands while its answer is lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Result;

/// The extended-protocol `Sync` message: tag `S` and a length of 4.
const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

#[derive(Debug, Clone, Default)]
struct Control {
    /// Wait before forwarding each chunk.
    delay: Duration,
    /// Hold every chunk until resumed.
    stalled: bool,
    /// Bumped by `cut`: connections of an older epoch close.
    epoch: u64,
    /// Close new connections at once.
    refusing: bool,
    /// `delay` applies only to connections whose serial is below this.
    delay_below: u64,
    /// Server-to-client traffic of connections whose serial is below this
    /// is held (until it is lowered again).
    replies_held_below: u64,
}

struct State {
    control: watch::Sender<Control>,
    /// Armed by `vanish_at_next_sync`.
    hold_sync: AtomicBool,
    /// Client chunks on delayed connections still let through undelayed.
    delay_skip: AtomicUsize,
    open: AtomicUsize,
    accepted: AtomicUsize,
    /// Chunks read and neither forwarded nor dropped yet.
    in_flight: AtomicUsize,
    /// Serial of the next connection.
    next_serial: std::sync::atomic::AtomicU64,
}

/// A fault-injecting TCP proxy on 127.0.0.1 in front of one server (see the
/// module documentation). Stops accepting when dropped; connections it
/// already carries are cut.
pub struct FaultProxy {
    port: u16,
    state: Arc<State>,
    acceptor: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("port", &self.port)
            .field("control", &*self.state.control.borrow())
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy to `127.0.0.1:target_port` on a free port. Must be
    /// called within a tokio runtime, which then carries the traffic.
    pub async fn start(target_port: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| super::failed("binding the proxy", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| super::failed("proxy address", e))?
            .port();
        let state = Arc::new(State {
            control: watch::Sender::new(Control::default()),
            hold_sync: AtomicBool::new(false),
            delay_skip: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            next_serial: std::sync::atomic::AtomicU64::new(0),
        });
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let acceptor = tokio::spawn(accept(listener, target, Arc::clone(&state)));
        Ok(Self {
            port,
            state,
            acceptor,
        })
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` (a `postgres://` URL) with its port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return url.to_owned();
        };
        let rest = &url[scheme_end..];
        let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..host_end];
        let host_start = authority.rfind('@').map_or(0, |i| i + 1);
        let host = &authority[host_start..];
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        format!(
            "{}{}{host}:{}{}",
            &url[..scheme_end],
            &authority[..host_start],
            self.port,
            &rest[host_end..]
        )
    }

    /// Delays every chunk, in both directions and on every connection, by
    /// `delay` (zero to stop).
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_skip.store(0, Ordering::SeqCst);
        self.state.control.send_modify(|c| {
            c.delay = delay;
            c.delay_below = u64::MAX;
        });
    }

    /// Delays the chunks of the connections open now (not of later ones)
    /// by `delay`, after letting `skip` more client-to-server chunks of
    /// them through on time. A statement sent on such a connection reaches
    /// the server `delay` late, after its client may have given up on it.
    pub fn delay_open_connections(&self, delay: Duration, skip: usize) {
        let below = self.state.next_serial.load(Ordering::SeqCst);
        self.state.delay_skip.store(skip, Ordering::SeqCst);
        self.state.control.send_modify(|c| {
            c.delay = delay;
            c.delay_below = below;
        });
    }

    /// Holds the server's answers on the connections open now: statements
    /// still reach the server and run, their results never come back.
    /// Later connections are not affected.
    pub fn hold_replies_of_open_connections(&self) {
        let below = self.state.next_serial.load(Ordering::SeqCst);
        self.state
            .control
            .send_modify(|c| c.replies_held_below = below);
    }

    /// Waits (at most `limit`) until no chunk is held or delayed in the
    /// proxy: every byte it read was forwarded or dropped with its
    /// connection. `false` when the limit came first.
    pub async fn settled(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.state.in_flight.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Holds all traffic, in both directions, until [`FaultProxy::resume`];
    /// connections stay open and new ones are accepted (and held too).
    pub fn stall(&self) {
        self.state.control.send_modify(|c| c.stalled = true);
    }

    /// Lets held traffic through again, in order.
    pub fn resume(&self) {
        self.state.control.send_modify(|c| c.stalled = false);
    }

    /// Closes every connection open now (bytes still held are lost); later
    /// connections work unless [`FaultProxy::refuse`] says otherwise.
    pub fn cut(&self) {
        self.state.control.send_modify(|c| c.epoch += 1);
    }

    /// Closes new connections at once (`true`), or accepts them again.
    pub fn refuse(&self, refusing: bool) {
        self.state.control.send_modify(|c| c.refusing = refusing);
    }

    /// The client vanishes mid-statement: the next client message batch
    /// that ends with a `Sync` is forwarded without that `Sync`, then all
    /// traffic through the proxy stalls (as [`FaultProxy::stall`]). The
    /// server has run the statement inside a transaction it never commits
    /// and keeps its locks, while the TCP connection stays up, until the
    /// connection is cut or the backend is ended.
    pub fn vanish_at_next_sync(&self) {
        self.state.hold_sync.store(true, Ordering::SeqCst);
    }

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Connections accepted since the proxy started.
    pub fn accepted_connections(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if state.control.borrow().refusing {
            drop(client);
            continue;
        }
        state.accepted.fetch_add(1, Ordering::SeqCst);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            state.open.fetch_add(1, Ordering::SeqCst);
            let epoch = state.control.borrow().epoch;
            let serial = state.next_serial.fetch_add(1, Ordering::SeqCst);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let link = Link {
                state: Arc::clone(&state),
                epoch,
                serial,
            };
            let up = pump(client_read, server_write, link.clone(), true);
            let down = pump(server_read, client_write, link, false);
            // Either direction ending (a close or a cut) ends the connection.
            tokio::select! {
                () = up => {}
                () = down => {}
            }
            state.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Waits until the connection's epoch is over (a cut).
async fn cut_of(control: &mut watch::Receiver<Control>, epoch: u64) {
    let _ = control.wait_for(|c| c.epoch != epoch).await;
}

/// What a pump knows about its connection.
#[derive(Clone)]
struct Link {
    state: Arc<State>,
    epoch: u64,
    serial: u64,
}

/// Counts a chunk as in flight until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
    client_to_server: bool,
) {
    let Link {
        state,
        epoch,
        serial,
    } = link;
    let mut control = state.control.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            () = cut_of(&mut control, epoch) => return,
        };
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        let in_flight = InFlight(&state.in_flight);
        let mut chunk = &buf[..n];
        let (delay, delayed) = {
            let c = control.borrow();
            (c.delay, serial < c.delay_below)
        };
        let skipped = delayed
            && client_to_server
            && state
                .delay_skip
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if delayed && !skipped && !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cut_of(&mut control, epoch) => return,
            }
        }
        let _ = control
            .wait_for(|c| {
                c.epoch != epoch
                    || (!c.stalled && (client_to_server || serial >= c.replies_held_below))
            })
            .await;
        if control.borrow().epoch != epoch {
            return;
        }
        let hold = client_to_server
            && chunk.ends_with(&SYNC)
            && state.hold_sync.swap(false, Ordering::SeqCst);
        if hold {
            chunk = &chunk[..chunk.len() - SYNC.len()];
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
        if hold {
            state.control.send_modify(|c| c.stalled = true);
            drop(in_flight);
            cut_of(&mut control, epoch).await;
            return;
        }
    }
}
