//! Several HTTP/2 connections to the relay: one connection's dispatch task and TCP socket
//! would otherwise cap the load a single client can generate.

use std::net::SocketAddr;

use anyhow::Context;
use tidings_proto::v1::mailbox_client::MailboxClient;
use tonic::transport::{Channel, Endpoint};

/// A fixed set of gRPC channels; client `i` uses channel `i % len`.
#[derive(Clone)]
pub struct Pool {
    channels: Vec<Channel>,
}

impl Pool {
    /// Opens `connections` connections to `addr` (at least one).
    pub async fn connect(addr: SocketAddr, connections: usize) -> anyhow::Result<Self> {
        Self::connect_spread(&[addr], connections).await
    }

    /// Opens `connections` connections (at least one per address), connection `i` to
    /// `addrs[i % addrs.len()]`: clients spread over several relay nodes.
    pub async fn connect_spread(addrs: &[SocketAddr], connections: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(!addrs.is_empty(), "no relay address");
        let mut channels = Vec::with_capacity(connections.max(addrs.len()));
        for i in 0..connections.max(addrs.len()) {
            let addr = addrs[i % addrs.len()];
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .context("relay URL")?
                .tcp_nodelay(true)
                .connect_timeout(std::time::Duration::from_secs(10))
                .connect()
                .await
                .with_context(|| format!("cannot connect to the relay at {addr}"))?;
            channels.push(channel);
        }
        Ok(Self { channels })
    }

    /// The channel of client `i`.
    pub fn channel(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }

    /// A Mailbox client on the channel of client `i`.
    pub fn mailbox(&self, i: usize) -> MailboxClient<Channel> {
        MailboxClient::new(self.channel(i))
    }

    /// How many connections.
    pub fn len(&self) -> usize {
        self.channels.len()
    }
}
