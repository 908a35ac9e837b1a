//! A TCP forwarder that can stop forwarding without closing anything. While it is stalled the
//! client's connection stays established and its bytes are acknowledged but never answered:
//! what a client sees when the host behind a connection vanishes or a VIP moves (a half-open
//! connection), which no server-side timeout and no TCP keepalive can notice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Forwards `127.0.0.1:port()` to a loopback target port until dropped.
pub struct TcpProxy {
    port: u16,
    stalled: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target_port: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        let accept = tokio::spawn(async move {
            // Dropped with the accept task, which aborts every connection's pumps.
            let mut pumps = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                pumps.spawn(pump(client_read, server_write, flag.clone()));
                pumps.spawn(pump(server_read, client_write, flag.clone()));
            }
        });
        TcpProxy {
            port,
            stalled,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on nothing is forwarded in either direction, on old and new connections.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, stalled: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
