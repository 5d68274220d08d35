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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Error, Result};

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
}

struct State {
    control: watch::Sender<Control>,
    /// Armed by `hold_back_next_sync`.
    hold_sync: AtomicBool,
    open: AtomicUsize,
    accepted: AtomicUsize,
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
            .map_err(|e| proxy_error(format!("binding the proxy: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| proxy_error(format!("proxy address: {e}")))?
            .port();
        let state = Arc::new(State {
            control: watch::Sender::new(Control::default()),
            hold_sync: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
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

    /// Delays every chunk, in both directions, by `delay` (zero to stop).
    pub fn set_delay(&self, delay: Duration) {
        self.state.control.send_modify(|c| c.delay = delay);
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

    /// The next client message batch that ends with a `Sync` is forwarded
    /// without that `Sync`, and its connection then stalls for good: the
    /// server has run the statement inside a transaction it never commits,
    /// and keeps its locks, until the connection is cut or the backend is
    /// ended.
    pub fn hold_back_next_sync(&self) {
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

fn proxy_error(message: String) -> Error {
    Error::TestServer { message }
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
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = pump(client_read, server_write, Arc::clone(&state), epoch, true);
            let down = pump(server_read, client_write, Arc::clone(&state), epoch, false);
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

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<State>,
    epoch: u64,
    client_to_server: bool,
) {
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
        let mut chunk = &buf[..n];
        let delay = control.borrow().delay;
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cut_of(&mut control, epoch) => return,
            }
        }
        let _ = control.wait_for(|c| !c.stalled || c.epoch != epoch).await;
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
            cut_of(&mut control, epoch).await;
            return;
        }
    }
}
