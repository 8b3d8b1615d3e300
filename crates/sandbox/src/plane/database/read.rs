//! Reading the region's RDS DB instances and their master passwords from the control plane.

use super::DbSpec;
use crate::Error;
use crate::plane::Clients;
use crate::plane::observe::{MAX_PAGES, aws, port};

/// Reads the region's RDS DB instances that are `available` (or rebooting, modifying: they
/// exist and serve).
pub(crate) async fn databases(c: &Clients) -> Result<Vec<DbSpec>, Error> {
    let mut specs = Vec::new();
    let mut marker = None;
    for _ in 0..MAX_PAGES {
        let out = c
            .rds
            .describe_db_instances()
            .set_marker(marker)
            .send()
            .await
            .map_err(aws("DescribeDBInstances", "*"))?;
        for i in out.db_instances() {
            if matches!(
                i.db_instance_status(),
                Some("creating" | "deleting" | "stopped" | "stopping" | "failed")
            ) {
                continue;
            }
            let Some((endpoint, port)) = i
                .endpoint()
                .and_then(|e| Some((e.address()?.to_owned(), port(e.port())?)))
            else {
                continue;
            };
            let subnets = i
                .db_subnet_group()
                .map(|g| {
                    g.subnets()
                        .iter()
                        .filter_map(|s| {
                            Some((
                                s.subnet_identifier()?.to_owned(),
                                s.subnet_availability_zone()?.name()?.to_owned(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            specs.push(DbSpec {
                id: i.db_instance_identifier().unwrap_or_default().to_owned(),
                arn: i.db_instance_arn().unwrap_or_default().to_owned(),
                engine: i.engine().unwrap_or_default().to_owned(),
                endpoint,
                port,
                multi_az: i.multi_az().unwrap_or(false),
                zone: i.availability_zone().unwrap_or_default().to_owned(),
                subnets,
                user: i.master_username().unwrap_or_default().to_owned(),
                database: i.db_name().unwrap_or("postgres").to_owned(),
                secret_arn: i
                    .master_user_secret()
                    .and_then(|s| s.secret_arn())
                    .map(str::to_owned),
            });
        }
        marker = out.marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    Ok(specs)
}

/// The `password` of an RDS-managed master user secret (JSON with `username` and `password`).
pub(crate) async fn master_password(c: &Clients, arn: &str) -> Result<String, Error> {
    let out =
        c.sm.get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(aws("GetSecretValue", arn))?;
    let doc: serde_json::Value = serde_json::from_str(out.secret_string().unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
    doc.get("password")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::Io {
            operation: "read",
            resource: format!("secret {arn}"),
            source: std::io::Error::other("no \"password\" key in the secret's JSON"),
        })
}
