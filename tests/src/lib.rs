//! Fixtures for the end-to-end tests: a stack deployed from a `stack.toml` text into moto (an
//! account of its own) with the sandbox data plane running its tasks and serving its load
//! balancer in this process, ready for [`proof::prove`].

use std::time::Duration;

use infra::Context;
use sandbox::{Clock, DataPlane, MotoServer, PlaneOptions};
use stack::StackConfig;

/// A deployed stack and the data plane that serves it; the plane stops when dropped.
#[derive(Debug)]
pub struct Deployed {
    /// What `proof::prove` needs.
    pub deployment: proof::Deployment,
    /// The data plane (tasks, load balancer).
    pub plane: DataPlane,
}

/// Fails with what went wrong, for test set-up.
fn fail(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Deploys the stack `toml` describes into a fresh moto account, starts the data plane on
/// `clock`, and waits until the service's tasks answer through the load balancer.
pub async fn deploy(toml: &str, clock: Clock) -> Result<Deployed, String> {
    let moto =
        MotoServer::shared().map_err(|e| fail("starting moto (run `cargo xtask setup`)", e))?;
    let config = StackConfig::from_toml(toml, "stack.toml").map_err(|e| fail("stack.toml", e))?;
    let stack = config.validate().map_err(|e| fail("stack.toml", e))?;
    let account = moto.fresh_account();
    let sdk = sandbox::sdk_config(moto.endpoint(), stack.region());
    let cx = Context::builder(sdk.clone(), stack.name().clone())
        .interceptor(account.clone())
        .build();
    let outputs = Box::pin(stack.apply(&cx))
        .await
        .map_err(|e| fail("deploy", e))?;
    let options = PlaneOptions::new(sandbox::daemon::sample_app_path())
        .interceptor(account)
        .clock(clock);
    let plane = DataPlane::start(sdk, options)
        .await
        .map_err(|e| fail("data plane", e))?;
    let dns = outputs.load_balancer.dns_name.clone();
    // The tasks launch as on AWS (about a minute and a half), on the clock.
    let status = plane
        .wait_for(
            clock.wall(Duration::from_secs(180)) + Duration::from_secs(30),
            |s| {
                s.endpoints.iter().any(|e| e.dns_name == dns)
                    && s.services.iter().any(|svc| {
                        svc.desired > 0 && svc.healthy >= usize::try_from(svc.desired).unwrap_or(0)
                    })
            },
        )
        .await
        .ok_or_else(|| format!("the service did not become healthy: {:?}", plane.status()))?;
    let endpoint = status
        .endpoints
        .iter()
        .find(|e| e.dns_name == dns && e.port == 80)
        .ok_or_else(|| format!("no listener on port 80 for {dns}"))?;
    // The nodes listen on port 80 when they can, else on a port they share.
    let port = endpoint.local_addr.port();
    let target = proof::Target {
        url: if port == 80 {
            format!("http://{dns}/")
        } else {
            format!("http://{dns}:{port}/")
        },
        connect_to: Vec::new(),
        dns_server: status.dns,
        nodes: endpoint
            .nodes
            .iter()
            .map(|n| (n.addr, n.zone.clone()))
            .collect(),
        kind: "sandbox".to_owned(),
    };
    Ok(Deployed {
        deployment: proof::Deployment {
            stack,
            cx,
            outputs,
            target,
        },
        plane,
    })
}
