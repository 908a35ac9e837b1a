//! One accept task per instance. A `down` instance really closes its listening socket so connects
//! are refused by the kernel, as they are for a stopped postmaster; the task re-binds the same
//! port when the instance comes back.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tracing::{info, warn};

use super::instances::SimCore;
use super::{control, layout, limits, server, SimConfig, SimError};
use ftsd::model::Segment;

/// Descriptors kept free beyond one per instance: control server, log, in-flight connections.
const FD_HEADROOM: u64 = 256;
const LISTEN_BACKLOG: u32 = 128;

/// A running simulator. Dereferences to [`SimCore`] for views and fault injection; dropping it
/// stops every listener and connection.
pub struct Simulator {
    core: Arc<SimCore>,
    control: Option<SocketAddr>,
}

impl Simulator {
    /// Binds every instance's listener (all are accepting when this returns) and starts serving.
    pub async fn start(cfg: SimConfig) -> Result<Simulator, SimError> {
        cfg.validate()?;
        let catalog = layout(&cfg);
        let served: Vec<Segment> = catalog
            .iter()
            .filter(|r| r.content >= 0 || cfg.serves_coordinator())
            .cloned()
            .collect();
        limits::ensure_fd_limit(served.len() as u64 + FD_HEADROOM)?;

        let mut listeners = Vec::with_capacity(served.len());
        for row in &served {
            let addr = SocketAddr::new(cfg.host, row.port as u16);
            let listener = bind(addr).map_err(|error| SimError::Io {
                context: format!("cannot listen on {addr} for dbid {}", row.dbid),
                error,
            })?;
            listeners.push(listener);
        }
        let core = Arc::new(SimCore::new(cfg, &served, catalog));
        for (idx, listener) in listeners.into_iter().enumerate() {
            let inst = &core.instances[idx];
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            inst.port.store(port, Ordering::Relaxed);
            inst.listening.store(true, Ordering::Release);
            tokio::spawn(accept_loop(Arc::clone(&core), idx, Some(listener)));
        }
        Ok(Simulator {
            core,
            control: None,
        })
    }

    /// Starts the HTTP control API on `addr` (port 0 allowed) and returns the bound address.
    pub async fn serve_control(&mut self, addr: SocketAddr) -> Result<SocketAddr, SimError> {
        let bound = control::spawn(Arc::clone(&self.core), addr).await?;
        self.control = Some(bound);
        Ok(bound)
    }

    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control
    }

    /// Shared handle for code that outlives a borrow of the simulator.
    pub fn core(&self) -> Arc<SimCore> {
        Arc::clone(&self.core)
    }

    /// Address of an instance's listener.
    pub fn addr(&self, dbid: ftsd::model::Dbid) -> Result<SocketAddr, SimError> {
        Ok(self.core.addr(self.core.index_of(dbid)?))
    }

    /// Stops listeners, connections and the control server.
    pub fn shutdown(&self) {
        self.core.shutdown.send_replace(true);
    }
}

impl Deref for Simulator {
    type Target = Arc<SimCore>;
    fn deref(&self) -> &Arc<SimCore> {
        &self.core
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Lets a re-bind after `down` succeed while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn accept_loop(core: Arc<SimCore>, idx: usize, mut listener: Option<TcpListener>) {
    let inst = &core.instances[idx];
    let mut shutdown = core.shutdown.subscribe();
    let mut bind_warned = false;
    loop {
        let notified = inst.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let want = core.should_listen(idx);
        if want != listener.is_some() {
            if want {
                let addr = core.addr(idx);
                match bind(addr) {
                    Ok(l) => {
                        listener = Some(l);
                        bind_warned = false;
                    }
                    Err(e) => {
                        if !bind_warned {
                            warn!(dbid = inst.dbid, %addr, error = %e, "cannot listen again; retrying");
                            bind_warned = true;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                            _ = &mut notified => {}
                            _ = super::instances::stopped(&mut shutdown) => return,
                        }
                        continue;
                    }
                }
            } else {
                listener = None;
            }
            info!(dbid = inst.dbid, listening = want, "listener changed");
            inst.listening.store(want, Ordering::Release);
            inst.changed.notify_waiters();
            continue;
        }

        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = super::instances::stopped(&mut shutdown) => return,
            _ = &mut notified => {}
            accepted = accept => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(server::handle(Arc::clone(&core), idx, stream));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(dbid = inst.dbid, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
