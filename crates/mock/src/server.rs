//! [`MockServer`]: the mock served over loopback HTTP with hyper-util.

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rampart_core::Body;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt as _;

use crate::service::MockService;

/// A running loopback server. Stops accepting — and drops every open connection — when dropped
/// or [shut down](MockServer::shutdown).
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    pub(crate) async fn start(service: MockService, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, service, rx));
        Ok(Self {
            addr,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL an OpenAI client is configured with.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stops the server (the same as dropping it). The listener closes shortly after, on the
    /// runtime; use [`MockServer::shutdown_and_wait`] to wait for it.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Stops the server and waits until the listener and every connection are closed.
    pub async fn shutdown_and_wait(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn to_body(req: Request<Incoming>) -> Request<Body> {
    req.map(Body::new)
}

async fn accept_loop(listener: TcpListener, service: MockService, mut stop: oneshot::Receiver<()>) {
    let mut conns = JoinSet::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let svc = TowerToHyperService::new(
                        service.clone().map_request(to_body as fn(Request<Incoming>) -> Request<Body>),
                    );
                    let builder = builder.clone();
                    conns.spawn(async move {
                        if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                            tracing::debug!(error = %e, "rampart-mock: connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off a little and keep serving.
                    tracing::warn!(error = %e, "rampart-mock: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    // Dropping the set aborts every open connection.
    conns.shutdown().await;
}
