//! Reads what the stack has: the database's security group (EC2), its DB subnet group and its
//! DB instance or Multi-AZ DB cluster (RDS), by their derived names; ownership by the stack's
//! tags.

use std::collections::BTreeMap;

use infra::{Context, aws};

use crate::Clients;
use crate::config::Deployment;
use crate::error::Error;
use crate::sg::{self, Sg, is_ours};

/// The names the stack's resources have: `{stack}-db` for all three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The DB instance identifier (or the DB cluster's).
    pub instance: String,
    /// The DB subnet group.
    pub subnet_group: String,
    /// The security group.
    pub security_group: String,
}

impl Names {
    /// The stack's names.
    pub fn of(cx: &Context) -> Names {
        let base = format!("{}-db", cx.stack().as_str());
        Names {
            instance: base.clone(),
            subnet_group: base.clone(),
            security_group: base,
        }
    }
}

/// The DB subnet group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubnetGroup {
    pub(crate) subnets: Vec<String>,
    pub(crate) ours: bool,
}

/// The DB instance, or the Multi-AZ DB cluster, as RDS describes it (a cluster's class is
/// its instances', its zone its writer's, its endpoint the writer endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instance {
    pub(crate) deployment: Deployment,
    pub(crate) arn: String,
    pub(crate) status: String,
    pub(crate) engine: String,
    pub(crate) engine_version: String,
    pub(crate) class: String,
    pub(crate) allocated_storage: i32,
    pub(crate) multi_az: bool,
    /// Where RDS says the primary runs.
    pub(crate) zone: Option<String>,
    pub(crate) storage_encrypted: bool,
    pub(crate) publicly_accessible: bool,
    pub(crate) deletion_protection: bool,
    pub(crate) backup_retention_days: i32,
    pub(crate) database_name: Option<String>,
    pub(crate) master_username: Option<String>,
    pub(crate) endpoint: Option<(String, i32)>,
    /// A cluster's reader endpoint (its two readable standbys).
    pub(crate) reader_endpoint: Option<String>,
    pub(crate) master_secret_arn: Option<String>,
    pub(crate) security_groups: Vec<String>,
    pub(crate) ours: bool,
}

impl Instance {
    /// The major version of the engine (`16.4` is 16).
    pub(crate) fn major(&self) -> Option<u32> {
        self.engine_version.split('.').next()?.parse().ok()
    }
}

/// Everything the module has in the account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub(crate) sg: Option<Sg>,
    pub(crate) subnet_group: Option<SubnetGroup>,
    pub(crate) instance: Option<Instance>,
    pub(crate) cluster: Option<Instance>,
}

impl Observed {
    /// The database of `deployment`, and the stack's database of the other kind.
    pub(crate) fn database(
        &self,
        deployment: Deployment,
    ) -> (Option<&Instance>, Option<&Instance>) {
        match deployment {
            Deployment::Instance => (self.instance.as_ref(), self.cluster.as_ref()),
            Deployment::Cluster => (self.cluster.as_ref(), self.instance.as_ref()),
        }
    }
}

/// Reads the four resources (the security group in `vpc` when given, else by name and the
/// stack's tag).
pub(crate) async fn observe(
    c: &Clients,
    cx: &Context,
    vpc: Option<&str>,
) -> Result<Observed, Error> {
    let names = Names::of(cx);
    let (sg, subnet_group, instance, cluster) = tokio::try_join!(
        sg::observe(&c.ec2, cx, &names.security_group, vpc, crate::PORT),
        subnet_group(c, cx, &names),
        instance(c, cx, &names),
        cluster(c, cx, &names),
    )?;
    Ok(Observed {
        sg,
        subnet_group,
        instance,
        cluster,
    })
}

fn rds_tags(list: &[aws_sdk_rds::types::Tag]) -> BTreeMap<String, String> {
    list.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect()
}

async fn subnet_group(
    c: &Clients,
    cx: &Context,
    names: &Names,
) -> Result<Option<SubnetGroup>, Error> {
    let out = match c
        .rds
        .describe_db_subnet_groups()
        .db_subnet_group_name(&names.subnet_group)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_db_subnet_group_not_found_fault()) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(aws(
                "DescribeDBSubnetGroups",
                format!("DB subnet group {}", names.subnet_group),
            )(e)
            .into());
        }
    };
    let Some(g) = out.db_subnet_groups().first() else {
        return Ok(None);
    };
    let arn = g.db_subnet_group_arn().unwrap_or_default();
    let tags = c
        .rds
        .list_tags_for_resource()
        .resource_name(arn)
        .send()
        .await
        .map_err(aws("ListTagsForResource", arn))?;
    let mut subnets: Vec<String> = g
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_identifier().map(str::to_owned))
        .collect();
    subnets.sort();
    Ok(Some(SubnetGroup {
        subnets,
        ours: is_ours(cx, &rds_tags(tags.tag_list())),
    }))
}

pub(crate) async fn instance(
    c: &Clients,
    cx: &Context,
    names: &Names,
) -> Result<Option<Instance>, Error> {
    let out = match c
        .rds
        .describe_db_instances()
        .db_instance_identifier(&names.instance)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_db_instance_not_found_fault()) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(aws(
                "DescribeDBInstances",
                format!("DB instance {}", names.instance),
            )(e)
            .into());
        }
    };
    Ok(out.db_instances().first().map(|i| read_instance(cx, i)))
}

/// The module's view of a described DB instance.
pub(crate) fn read_instance(cx: &Context, i: &aws_sdk_rds::types::DbInstance) -> Instance {
    Instance {
        deployment: Deployment::Instance,
        arn: i.db_instance_arn().unwrap_or_default().to_owned(),
        status: i.db_instance_status().unwrap_or_default().to_owned(),
        engine: i.engine().unwrap_or_default().to_owned(),
        engine_version: i.engine_version().unwrap_or_default().to_owned(),
        class: i.db_instance_class().unwrap_or_default().to_owned(),
        allocated_storage: i.allocated_storage().unwrap_or(0),
        multi_az: i.multi_az().unwrap_or(false),
        zone: i.availability_zone().map(str::to_owned),
        storage_encrypted: i.storage_encrypted().unwrap_or(false),
        publicly_accessible: i.publicly_accessible().unwrap_or(false),
        deletion_protection: i.deletion_protection().unwrap_or(false),
        backup_retention_days: i.backup_retention_period().unwrap_or(0),
        database_name: i.db_name().map(str::to_owned),
        master_username: i.master_username().map(str::to_owned),
        endpoint: i
            .endpoint()
            .and_then(|e| Some((e.address()?.to_owned(), e.port()?))),
        reader_endpoint: None,
        master_secret_arn: i
            .master_user_secret()
            .and_then(|s| s.secret_arn())
            .map(str::to_owned),
        security_groups: i
            .vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id().map(str::to_owned))
            .collect(),
        ours: is_ours(cx, &rds_tags(i.tag_list())),
    }
}

/// The Multi-AZ DB cluster `{stack}-db`, with its writer's zone (one more call: RDS reports
/// zones on the cluster's instances).
pub(crate) async fn cluster(
    c: &Clients,
    cx: &Context,
    names: &Names,
) -> Result<Option<Instance>, Error> {
    let out = match c
        .rds
        .describe_db_clusters()
        .db_cluster_identifier(&names.instance)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_db_cluster_not_found_fault()) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(aws(
                "DescribeDBClusters",
                format!("DB cluster {}", names.instance),
            )(e)
            .into());
        }
    };
    let Some(k) = out.db_clusters().first() else {
        return Ok(None);
    };
    let writer = k
        .db_cluster_members()
        .iter()
        .find(|m| m.is_cluster_writer() == Some(true))
        .and_then(|m| m.db_instance_identifier());
    let zone = match writer {
        Some(id) => c
            .rds
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(aws("DescribeDBInstances", format!("DB instance {id}")))?
            .db_instances()
            .first()
            .and_then(|i| i.availability_zone())
            .map(str::to_owned),
        None => None,
    };
    Ok(Some(Instance {
        deployment: Deployment::Cluster,
        arn: k.db_cluster_arn().unwrap_or_default().to_owned(),
        status: k.status().unwrap_or_default().to_owned(),
        engine: k.engine().unwrap_or_default().to_owned(),
        engine_version: k.engine_version().unwrap_or_default().to_owned(),
        class: k.db_cluster_instance_class().unwrap_or_default().to_owned(),
        allocated_storage: k.allocated_storage().unwrap_or(0),
        multi_az: k.multi_az().unwrap_or(false),
        zone,
        storage_encrypted: k.storage_encrypted().unwrap_or(false),
        publicly_accessible: k.publicly_accessible().unwrap_or(false),
        deletion_protection: k.deletion_protection().unwrap_or(false),
        backup_retention_days: k.backup_retention_period().unwrap_or(0),
        database_name: k.database_name().map(str::to_owned),
        master_username: k.master_username().map(str::to_owned),
        endpoint: k.endpoint().and_then(|e| Some((e.to_owned(), k.port()?))),
        reader_endpoint: k.reader_endpoint().map(str::to_owned),
        master_secret_arn: k
            .master_user_secret()
            .and_then(|s| s.secret_arn())
            .map(str::to_owned),
        security_groups: k
            .vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id().map(str::to_owned))
            .collect(),
        ours: is_ours(cx, &rds_tags(k.tag_list())),
    }))
}
