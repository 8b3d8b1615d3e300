//! Where the load goes.

use std::net::SocketAddr;
use std::sync::Arc;

use loadtest::{DnsResolver, Resolve, ResolveFuture, SystemResolver};
use serde::{Deserialize, Serialize};

/// The address of a deployed stack's load balancer, as the load engine needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The URL requests go to, e.g. `http://stackproof-alb-1.eu-west-1.elb.amazonaws.com/`.
    pub url: String,
    /// Connections to `host:port` go to `addr` instead, like curl `--connect-to` (a fixed
    /// address, e.g. with `--url`). Empty otherwise.
    pub connect_to: Vec<ConnectTo>,
    /// Resolve the URL's host with this DNS server (the sandbox's, which answers for its load
    /// balancers with one node per zone, TTL as AWS's) instead of the system's resolver. `None`
    /// against AWS (real DNS). Either way the answer is re-resolved when it expires, so the
    /// load follows the load balancer's nodes.
    #[serde(default)]
    pub dns_server: Option<SocketAddr>,
    /// The load balancer's nodes where known (the sandbox): address and zone, to show the load
    /// per node.
    #[serde(default)]
    pub nodes: Vec<(SocketAddr, String)>,
    /// `sandbox` or `aws`, for reports.
    pub kind: String,
}

/// One `--connect-to` mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectTo {
    /// The host name of the URL (case-insensitive).
    pub host: String,
    /// The port of the URL.
    pub port: u16,
    /// Where to connect instead.
    pub addr: SocketAddr,
}

impl Target {
    /// The resolver the load engine should use: the mappings first, the system's DNS for the
    /// rest; `None` (the engine's default) when there are no mappings.
    pub fn resolver(&self) -> Option<Arc<dyn Resolve>> {
        if self.connect_to.is_empty() {
            return self
                .dns_server
                .map(|s| Arc::new(DnsResolver::new(s)) as Arc<dyn Resolve>);
        }
        Some(Arc::new(ConnectToResolver {
            map: self.connect_to.clone(),
            system: SystemResolver::default(),
        }))
    }

    /// The zone of the node at `addr` (`ip:port`), if known.
    pub fn node_zone(&self, addr: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|(a, _)| a.to_string() == addr)
            .map(|(_, z)| z.as_str())
    }
}

#[derive(Debug)]
struct ConnectToResolver {
    map: Vec<ConnectTo>,
    system: SystemResolver,
}

impl Resolve for ConnectToResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        if let Some(c) = self
            .map
            .iter()
            .find(|c| c.port == port && c.host.eq_ignore_ascii_case(host))
        {
            let addr = c.addr;
            return Box::pin(async move { Ok(vec![addr]) });
        }
        self.system.resolve(host, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mapped_host_and_port_go_to_the_mapped_address() {
        let t = Target {
            url: "http://web.example/".into(),
            connect_to: vec![ConnectTo {
                host: "Web.Example".into(),
                port: 80,
                addr: "127.0.0.1:4567".parse().unwrap(),
            }],
            dns_server: None,
            nodes: Vec::new(),
            kind: "sandbox".into(),
        };
        let r = t.resolver().unwrap();
        assert_eq!(
            r.resolve("web.example", 80).await.unwrap(),
            vec!["127.0.0.1:4567".parse::<SocketAddr>().unwrap()]
        );
        // Another port is not mapped: the system resolver answers (an IP literal here).
        assert_eq!(
            r.resolve("127.0.0.2", 81).await.unwrap(),
            vec!["127.0.0.2:81".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn no_mapping_means_the_engine_default() {
        let t = Target {
            url: "http://web.example/".into(),
            connect_to: Vec::new(),
            dns_server: None,
            nodes: Vec::new(),
            kind: "aws".into(),
        };
        assert!(t.resolver().is_none());
    }
}
