//! The load balancer's nodes: one listener per enabled zone, as an ALB has one node (an address
//! in the DNS answer) in each of its subnets, and what cutting a node off does.
//!
//! A node whose subnet's network ACL denies everything answers nothing: a client's SYN gets
//! no SYN-ACK and its connect times out, and requests on connections it already had get no
//! answer. On loopback, without a packet filter, this is done with the listener itself: its
//! accept queue is shrunk to length zero and filled with one connection that is never accepted,
//! so the kernel drops every further SYN (Linux drops a SYN when the accept queue of a
//! listener is full); the node's open connections stop answering. Restoring the node grows the
//! queue again and resumes accepting.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::lock;

/// The accept queue of a reachable node.
pub(crate) const BACKLOG: i32 = 1024;

/// How long a connection that fills a cut-off node's accept queue may take; one that takes
/// longer was dropped: the queue is full.
const FILL_TIMEOUT: Duration = Duration::from_millis(100);

/// Most connections made to fill a queue (one is enough unless the accept loop takes some as
/// it stops).
const MAX_FILLERS: usize = 8;

/// One node: its zone, its listener and whether it is cut off.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub(crate) zone: Arc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) listener: TcpListener,
    /// `true` while reachable; the accept loop waits on it.
    pub(crate) reachable: watch::Sender<bool>,
    /// The connections that fill the accept queue while the node is cut off.
    fillers: Mutex<Vec<TcpStream>>,
    /// Serialises cutting off and restoring.
    change: tokio::sync::Mutex<()>,
}

impl NodeState {
    pub(crate) fn new(zone: &str, listener: TcpListener, addr: SocketAddr) -> NodeState {
        NodeState {
            zone: Arc::from(zone),
            addr,
            listener,
            reachable: watch::channel(true).0,
            fillers: Mutex::new(Vec::new()),
            change: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether clients can reach the node.
    pub(crate) fn is_reachable(&self) -> bool {
        *self.reachable.borrow()
    }

    /// Cuts the node off (its accept queue full, so SYNs are dropped) or restores it.
    pub(crate) async fn set_reachable(&self, reachable: bool) {
        let _one_at_a_time = self.change.lock().await;
        if self.is_reachable() == reachable {
            return;
        }
        if reachable {
            let _ = rustix::net::listen(&self.listener, BACKLOG);
            lock(&self.fillers).clear();
            self.reachable.send_replace(true);
        } else {
            // The accept loop stops first, so the fillers stay in the queue.
            self.reachable.send_replace(false);
            let _ = rustix::net::listen(&self.listener, 0);
            // A queue of length zero holds one connection: connect until an attempt goes
            // unanswered (a connection the accept loop took while it stopped freed a place).
            for _ in 0..MAX_FILLERS {
                match tokio::time::timeout(FILL_TIMEOUT, TcpStream::connect(self.addr)).await {
                    Ok(Ok(stream)) => lock(&self.fillers).push(stream),
                    _ => break,
                }
            }
        }
    }
}
