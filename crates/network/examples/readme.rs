//! The README's example, word for word below these lines (`tests/it/readme.rs` checks that
//! and runs it against moto). Inside this workspace the infra crate is named `infra`; the line
//! below gives it the name a user's project has for it.

extern crate infra as stackproof_infra;

use stackproof_infra::{Config, Context, Module, StackName};
use stackproof_network::{Network, NetworkConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Region, credentials and endpoint come from the environment, as for any AWS SDK program.
    let sdk = aws_config::load_from_env().await;
    let cx = Context::builder(sdk, StackName::new("demo")?).build();

    // `[network]` of a stack.toml; here the defaults: 10.0.0.0/16, 2 zones, a NAT gateway each.
    let config: NetworkConfig = NetworkConfig::default();
    let spec = config.validate(&cx.scope())?;
    let network = Network::new(&cx, spec);

    println!("{}", network.plan(&cx, &()).await?);
    let out = network.apply(&cx, &()).await?;
    println!("VPC {} across {}", out.vpc_id, out.zones.join(", "));
    println!("public subnets {}", out.public_subnet_ids.join(", "));
    println!("private subnets {}", out.private_subnet_ids.join(", "));
    Ok(())
}
