//! Reading the region's RDS DB instances, Multi-AZ DB clusters and their master passwords
//! from the control plane.

use super::DbSpec;
use crate::Error;
use crate::plane::Clients;
use crate::plane::observe::{MAX_PAGES, aws, port};

/// Whether a described instance or cluster is up (or rebooting, modifying: it exists and
/// serves).
fn serving(status: Option<&str>) -> bool {
    !matches!(
        status,
        Some("creating" | "deleting" | "stopped" | "stopping" | "failed")
    )
}

/// Reads the region's RDS DB instances and Multi-AZ DB clusters that serve.
pub(crate) async fn databases(c: &Clients) -> Result<Vec<DbSpec>, Error> {
    let mut specs = Vec::new();
    // A cluster's instances: (identifier, zone, subnet group), by cluster.
    let mut members: std::collections::BTreeMap<String, Vec<(String, String, Subnets)>> =
        std::collections::BTreeMap::new();
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
            let subnets = subnets_of(i.db_subnet_group());
            if let Some(cluster) = i.db_cluster_identifier() {
                // Run as its cluster.
                members.entry(cluster.to_owned()).or_default().push((
                    i.db_instance_identifier().unwrap_or_default().to_owned(),
                    i.availability_zone().unwrap_or_default().to_owned(),
                    subnets,
                ));
                continue;
            }
            if !serving(i.db_instance_status()) {
                continue;
            }
            let Some((endpoint, port)) = i
                .endpoint()
                .and_then(|e| Some((e.address()?.to_owned(), port(e.port())?)))
            else {
                continue;
            };
            let multi_az = i.multi_az().unwrap_or(false);
            specs.push(DbSpec {
                id: i.db_instance_identifier().unwrap_or_default().to_owned(),
                arn: i.db_instance_arn().unwrap_or_default().to_owned(),
                engine: i.engine().unwrap_or_default().to_owned(),
                endpoint,
                reader_endpoint: None,
                members: Vec::new(),
                port,
                multi_az,
                cluster: false,
                failover_requested: i
                    .tag_list()
                    .iter()
                    .any(|t| t.key() == Some(super::FAILOVER_TAG)),
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
    if !members.is_empty() {
        specs.extend(clusters(c, &members).await?);
    }
    Ok(specs)
}

type Subnets = Vec<(String, String)>;

/// A DB subnet group's (subnet id, zone) pairs.
fn subnets_of(group: Option<&aws_sdk_rds::types::DbSubnetGroup>) -> Subnets {
    group
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
        .unwrap_or_default()
}

/// The Multi-AZ DB clusters (a DB cluster instance class: not Aurora) that serve, with their
/// instances read from DescribeDBInstances (`members`).
async fn clusters(
    c: &Clients,
    members: &std::collections::BTreeMap<String, Vec<(String, String, Subnets)>>,
) -> Result<Vec<DbSpec>, Error> {
    let mut specs = Vec::new();
    let mut marker = None;
    for _ in 0..MAX_PAGES {
        let out = c
            .rds
            .describe_db_clusters()
            .set_marker(marker)
            .send()
            .await
            .map_err(aws("DescribeDBClusters", "*"))?;
        for k in out.db_clusters() {
            let id = k.db_cluster_identifier().unwrap_or_default();
            if k.db_cluster_instance_class().is_none() || !serving(k.status()) {
                continue;
            }
            let (Some(endpoint), Some(port), Some(instances)) =
                (k.endpoint(), port(k.port()), members.get(id))
            else {
                continue;
            };
            let writer = k
                .db_cluster_members()
                .iter()
                .find(|m| m.is_cluster_writer() == Some(true))
                .and_then(|m| m.db_instance_identifier());
            let zone = instances
                .iter()
                .find(|(i, _, _)| Some(i.as_str()) == writer)
                .map(|(_, z, _)| z.clone())
                .unwrap_or_default();
            specs.push(DbSpec {
                id: id.to_owned(),
                arn: k.db_cluster_arn().unwrap_or_default().to_owned(),
                engine: k.engine().unwrap_or_default().to_owned(),
                endpoint: endpoint.to_owned(),
                reader_endpoint: k.reader_endpoint().map(str::to_owned),
                members: instances
                    .iter()
                    .map(|(i, z, _)| (i.clone(), z.clone()))
                    .collect(),
                port,
                multi_az: true,
                cluster: true,
                failover_requested: false,
                zone,
                subnets: instances
                    .first()
                    .map(|(_, _, s)| s.clone())
                    .unwrap_or_default(),
                user: k.master_username().unwrap_or_default().to_owned(),
                database: k.database_name().unwrap_or("postgres").to_owned(),
                secret_arn: k
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
