//! The differences between what the configuration asks for and what exists, as ordered steps.
//! Pure: no AWS call.

use std::collections::BTreeMap;

use super::*;
use crate::Error;
/// The tags in `want` that `have` lacks or holds with another value.
fn missing_tags(
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    infra::tags::missing(want, have)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// True when `tags` say the resource belongs to `stack`'s compute module.
pub(crate) fn owned(tags: &BTreeMap<String, String>, stack: &str) -> bool {
    tags.get(infra::tags::STACK).map(String::as_str) == Some(stack)
        && tags.get(infra::tags::MODULE).map(String::as_str) == Some(MODULE)
}

fn not_ours(kind: &'static str, name: &str, stack: &str) -> Error {
    Error::NotOurs {
        kind,
        name: name.to_owned(),
        stack: stack.to_owned(),
    }
}

/// What differs between two task shapes, one line each.
pub(crate) fn task_differences(want: &TaskShape, have: &TaskShape) -> Vec<String> {
    let mut why = Vec::new();
    let mut cmp = |what: &str, w: String, h: String| {
        if w != h {
            why.push(format!("{what} {h} -> {w}"));
        }
    };
    cmp("cpu", want.cpu.clone(), have.cpu.clone());
    cmp("memory", want.memory.clone(), have.memory.clone());
    cmp(
        "network mode",
        want.network_mode.clone(),
        have.network_mode.clone(),
    );
    cmp(
        "compatibilities",
        format!("{:?}", want.compatibilities),
        format!("{:?}", have.compatibilities),
    );
    cmp(
        "platform",
        format!("{}/{}", want.os, want.arch),
        format!("{}/{}", have.os, have.arch),
    );
    cmp(
        "execution role",
        want.execution_role.clone(),
        have.execution_role.clone(),
    );
    cmp("task role", want.task_role.clone(), have.task_role.clone());
    if want.containers.len() != have.containers.len() {
        why.push(format!(
            "containers {} -> {}",
            have.containers.len(),
            want.containers.len()
        ));
        return why;
    }
    for (w, h) in want.containers.iter().zip(&have.containers) {
        let n = &w.name;
        let mut cmp = |what: &str, wv: String, hv: String| {
            if wv != hv {
                why.push(format!("container {n} {what} {hv} -> {wv}"));
            }
        };
        cmp("name", w.name.clone(), h.name.clone());
        cmp("image", w.image.clone(), h.image.clone());
        cmp(
            "essential",
            w.essential.to_string(),
            h.essential.to_string(),
        );
        cmp("ports", format!("{:?}", w.ports), format!("{:?}", h.ports));
        cmp(
            "health check",
            format!("{:?}", w.health),
            format!("{:?}", h.health),
        );
        cmp(
            "log driver",
            format!("{:?} {:?}", w.log_driver, w.log_options),
            format!("{:?} {:?}", h.log_driver, h.log_options),
        );
        cmp(
            "read-only root filesystem",
            w.read_only.to_string(),
            h.read_only.to_string(),
        );
        // Names only: a plan is printed and kept in CI logs, and a value may be a secret
        // someone put in the environment.
        for (what, w, h) in [
            ("environment", &w.environment, &h.environment),
            ("secrets", &w.secrets, &h.secrets),
        ] {
            let change = changed_names(w, h);
            if !change.is_empty() {
                why.push(format!("container {n} {what} {change}"));
            }
        }
    }
    why
}

/// The names that differ between two maps, without their values: `+NEW ~CHANGED -GONE`, or
/// empty when the maps are equal.
fn changed_names(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> String {
    let mut parts = Vec::new();
    for (name, value) in want {
        match have.get(name) {
            None => parts.push(format!("+{name}")),
            Some(old) if old != value => parts.push(format!("~{name}")),
            Some(_) => {}
        }
    }
    parts.extend(
        have.keys()
            .filter(|name| !want.contains_key(*name))
            .map(|name| format!("-{name}")),
    );
    parts.join(" ")
}

/// What differs between the wanted and existing service settings, one line each. Settings the
/// endpoint does not report (moto) are not compared.
pub(crate) fn service_differences(want: &ServiceShape, have: &ServiceShape) -> Vec<String> {
    let mut why = Vec::new();
    let mut cmp = |what: &str, w: String, h: String| {
        if w != h {
            why.push(format!("{what} {h} -> {w}"));
        }
    };
    cmp(
        "subnets",
        format!("{:?}", want.subnets),
        format!("{:?}", have.subnets),
    );
    cmp(
        "security groups",
        format!("{:?}", want.security_groups),
        format!("{:?}", have.security_groups),
    );
    cmp(
        "assign public ip",
        show(&want.public_ip),
        show(&have.public_ip),
    );
    cmp(
        "load balancers",
        format!("{:?}", want.load_balancers),
        format!("{:?}", have.load_balancers),
    );
    cmp(
        "propagate tags",
        show(&want.propagate_tags),
        show(&have.propagate_tags),
    );
    if let (Some(w), Some(h)) = (&want.full, &have.full) {
        cmp(
            "deployment configuration",
            format!("{:?}", w.deployment),
            format!("{:?}", h.deployment),
        );
        cmp("health check grace period", show(&w.grace), show(&h.grace));
        cmp(
            "availability zone rebalancing",
            show(&w.az_rebalancing),
            show(&h.az_rebalancing),
        );
        cmp(
            "ECS managed tags",
            w.managed_tags.to_string(),
            h.managed_tags.to_string(),
        );
    }
    why
}

/// The steps that take what exists to what the configuration asks for.
pub(crate) fn diff(desired: &Desired, observed: &Observed) -> Result<Vec<Op>, Error> {
    let mut ops = diff_foundation(desired, observed)?;
    ops.extend(diff_service(desired, observed)?);
    Ok(ops)
}

/// The steps for what needs none of the module's inputs: the IAM roles, the log group and the
/// cluster. They can run while the network and the load balancer are still being built.
pub(crate) fn diff_foundation(desired: &Desired, observed: &Observed) -> Result<Vec<Op>, Error> {
    let names = &desired.names;
    let stack = names.stack.as_str();
    let mut ops = Vec::new();

    for want in &desired.roles {
        let k = want.kind;
        match observed.roles.get(&k) {
            None => {
                ops.push(Op::CreateRole(k));
                ops.extend(want.managed.iter().map(|a| Op::AttachPolicy(k, a.clone())));
                ops.extend(want.inline.keys().map(|n| Op::PutInline(k, n.clone())));
            }
            Some(have) => {
                if !owned(&have.tags, stack) {
                    return Err(not_ours("IAM role", &want.name, stack));
                }
                // Before the inputs (the account, the image) are known, an existing role's
                // policies are left for the apply that knows them.
                if !desired.policies_known {
                    let tags = missing_tags(&want.tags, &have.tags);
                    if !tags.is_empty() {
                        ops.push(Op::TagRole(k, tags));
                    }
                    continue;
                }
                if have.trust != want.trust {
                    ops.push(Op::UpdateTrust(k));
                }
                for arn in want.managed.difference(&have.managed) {
                    ops.push(Op::AttachPolicy(k, arn.clone()));
                }
                for arn in have.managed.difference(&want.managed) {
                    ops.push(Op::DetachPolicy(k, arn.clone()));
                }
                for (name, doc) in &want.inline {
                    if have.inline.get(name) != Some(doc) {
                        ops.push(Op::PutInline(k, name.clone()));
                    }
                }
                for name in have.inline.keys().filter(|n| !want.inline.contains_key(*n)) {
                    ops.push(Op::DeleteInline(k, name.clone()));
                }
                let tags = missing_tags(&want.tags, &have.tags);
                if !tags.is_empty() {
                    ops.push(Op::TagRole(k, tags));
                }
            }
        }
    }

    match &observed.log_group {
        None => ops.push(Op::CreateLogGroup),
        Some(have) => {
            if !owned(&have.tags, stack) {
                return Err(not_ours("log group", &names.log_group, stack));
            }
            if have.retention != Some(desired.retention) {
                ops.push(Op::PutRetention {
                    was: have.retention,
                });
            }
            let tags = missing_tags(&desired.tags(LOG_GROUP), &have.tags);
            if !tags.is_empty() {
                ops.push(Op::TagLogGroup {
                    arn: have.arn.clone(),
                    tags,
                });
            }
        }
    }

    match observed.cluster.as_ref().filter(|c| c.status != "INACTIVE") {
        None => ops.push(Op::CreateCluster),
        Some(have) => {
            if !owned(&have.tags, stack) {
                return Err(not_ours("ECS cluster", &names.cluster, stack));
            }
            if have.insights.as_deref() != Some(desired.insights) {
                ops.push(Op::UpdateInsights {
                    was: have.insights.clone(),
                });
            }
            let tags = missing_tags(&desired.tags(CLUSTER), &have.tags);
            if !tags.is_empty() {
                ops.push(Op::TagEcs {
                    kind: EcsKind::Cluster,
                    arn: have.arn.clone(),
                    tags,
                });
            }
        }
    }

    Ok(ops)
}

/// The steps for what the inputs shape: the task definition (its image may be the stack's
/// repository), the service (subnets, security group, target group) and its scaling.
/// The roles' policies that differ between the foundation's `early` shape and the whole
/// `desired` one: what only the inputs tell (a secret another module links, such as the
/// database's password, or a managed policy the fault role needs for it) and the foundation
/// therefore wrote without.
pub(crate) fn policies_since(early: &Desired, desired: &Desired) -> Vec<Op> {
    let mut ops = Vec::new();
    for want in &desired.roles {
        let before = early.roles.iter().find(|r| r.kind == want.kind);
        for arn in &want.managed {
            if !before.is_some_and(|r| r.managed.contains(arn)) {
                ops.push(Op::AttachPolicy(want.kind, arn.clone()));
            }
        }
        for (name, doc) in &want.inline {
            if before.and_then(|r| r.inline.get(name)) != Some(doc) {
                ops.push(Op::PutInline(want.kind, name.clone()));
            }
        }
    }
    ops
}

pub(crate) fn diff_service(desired: &Desired, observed: &Observed) -> Result<Vec<Op>, Error> {
    let names = &desired.names;
    let stack = names.stack.as_str();
    let mut ops = Vec::new();

    let current_task = task_definition_steps(desired, observed, &mut ops);

    let service = observed.service.as_ref();
    let status = service.map(|s| s.status.as_str());
    match (service, status) {
        (None, _) | (Some(_), Some("INACTIVE")) => ops.push(Op::CreateService),
        (Some(_), Some("DRAINING")) => {
            ops.push(Op::WaitServiceInactive);
            ops.push(Op::CreateService);
        }
        (Some(have), _) => {
            if !owned(&have.tags, stack) {
                return Err(not_ours("ECS service", &names.service, stack));
            }
            if let Some(lt) = &have.shape.launch_type
                && Some(lt) != desired.service.launch_type.as_ref()
            {
                return Err(Error::NeedsReplacement {
                    resource: format!("ECS service {}", names.service),
                    field: "launch type",
                    have: lt.clone(),
                    want: "FARGATE".to_owned(),
                });
            }
            let mut why = service_differences(&desired.service, &have.shape);
            match current_task {
                Some(arn) if arn == have.task_definition => {}
                Some(arn) => why.push(format!("task definition {} -> {arn}", have.task_definition)),
                None => why.push(format!(
                    "task definition {} -> the new revision",
                    have.task_definition
                )),
            }
            if !why.is_empty() {
                ops.push(Op::UpdateService { why });
            }
            let tags = missing_tags(&desired.tags(SERVICE), &have.tags);
            if !tags.is_empty() {
                ops.push(Op::TagEcs {
                    kind: EcsKind::Service,
                    arn: have.arn.clone(),
                    tags,
                });
            }
        }
    }

    scaling_steps(desired, observed, &mut ops);
    Ok(ops)
}

/// The task definition: a new revision only when the newest one differs. Returns the ARN of
/// the revision the service should run, when it exists already.
fn task_definition_steps<'a>(
    desired: &Desired,
    observed: &'a Observed,
    ops: &mut Vec<Op>,
) -> Option<&'a str> {
    let names = &desired.names;
    match &observed.task_definition {
        None => {
            ops.push(Op::RegisterTaskDefinition {
                why: vec![format!(
                    "revision 1 of family {}: {} cpu, {} MiB, image {}",
                    names.family,
                    desired.task.cpu,
                    desired.task.memory,
                    desired.task.containers[0].image
                )],
            });
            None
        }
        Some(have) => {
            let why = task_differences(&desired.task, &have.shape);
            if why.is_empty() {
                let tags = missing_tags(&desired.tags(TASK_DEFINITION), &have.tags);
                if !tags.is_empty() {
                    ops.push(Op::TagEcs {
                        kind: EcsKind::TaskDefinition,
                        arn: have.arn.clone(),
                        tags,
                    });
                }
                Some(have.arn.as_str())
            } else {
                ops.push(Op::RegisterTaskDefinition { why });
                None
            }
        }
    }
}

/// The scalable target's bounds and the target tracking policies.
fn scaling_steps(desired: &Desired, observed: &Observed, ops: &mut Vec<Op>) {
    if observed.target != Some((desired.min, desired.max)) {
        ops.push(Op::RegisterTarget {
            was: observed.target,
        });
    }
    for (name, want) in &desired.policies {
        match observed.policies.get(name) {
            None => ops.push(Op::PutPolicy {
                name: name.clone(),
                exists: false,
                why: vec![format!(
                    "target tracking {} = {}{}",
                    want.metric,
                    want.target,
                    want.label
                        .as_ref()
                        .map(|l| format!(" (resource label {l})"))
                        .unwrap_or_default()
                )],
            }),
            Some(have) if !want.same(have) => ops.push(Op::PutPolicy {
                name: name.clone(),
                exists: true,
                why: vec![format!(
                    "{} {} -> {}, cooldowns out/in {}/{} -> {}/{}",
                    want.metric,
                    have.target,
                    want.target,
                    have.scale_out_cooldown,
                    have.scale_in_cooldown,
                    want.scale_out_cooldown,
                    want.scale_in_cooldown
                )],
            }),
            Some(_) => {}
        }
    }
}

/// The log group destroy leaves in place: the stack's, holding logs (a stream), and
/// `force_destroy` off. Logs are data, as the objects of the log bucket are. `None` when destroy
/// deletes it, or when its contents were not read.
pub(crate) fn kept_log_group(
    names: &Names,
    observed: &Observed,
    force_destroy: bool,
) -> Option<infra::Change> {
    if force_destroy {
        return None;
    }
    let group = observed
        .log_group
        .as_ref()
        .filter(|g| owned(&g.tags, names.stack.as_str()))?;
    let contents = group.contents.as_ref()?;
    let stream = contents.newest_stream.as_ref()?;
    let stored = if contents.stored_bytes > 0 {
        format!(", {} bytes stored", contents.stored_bytes)
    } else {
        String::new()
    };
    let expiry = match group.retention {
        Some(days) => format!("CloudWatch deletes its events {days} days after they were written"),
        None => "its events never expire".to_owned(),
    };
    Some(
        infra::Change::new(infra::Action::Keep, MODULE, "log-group", &names.log_group)
            .id(group.arn.clone())
            .detail(format!(
                "it holds logs (newest stream {stream}{stored}); logs are data, so destroy keeps it"
            ))
            .detail(format!(
                "{expiry}; the next deploy takes it over; `force-destroy = true` in [service] deletes it"
            )),
    )
}

/// The steps that remove everything of the stack's compute that exists and is the stack's,
/// except a log group [`kept_log_group`] keeps.
pub(crate) fn teardown(names: &Names, observed: &Observed, force_destroy: bool) -> Vec<Op> {
    let stack = names.stack.as_str();
    let mut ops = Vec::new();
    for name in observed.policies.keys() {
        ops.push(Op::DeletePolicy { name: name.clone() });
    }
    if observed.target.is_some() {
        ops.push(Op::DeregisterTarget);
    }
    if let Some(s) = &observed.service
        && owned(&s.tags, stack)
    {
        match s.status.as_str() {
            "ACTIVE" => {
                if s.desired_count > 0 {
                    ops.push(Op::ScaleToZero {
                        was: s.desired_count,
                    });
                }
                ops.push(Op::DeleteService);
                ops.push(Op::WaitServiceInactive);
            }
            "DRAINING" => ops.push(Op::WaitServiceInactive),
            _ => {}
        }
    }
    for arn in &observed.task_definition_arns {
        ops.push(Op::DeregisterTaskDefinition { arn: arn.clone() });
    }
    // Deregistered revisions stay (INACTIVE) until deleted: the ones just deregistered and
    // those earlier deploys left.
    let revisions: Vec<String> = observed
        .task_definition_arns
        .iter()
        .chain(&observed.inactive_task_definition_arns)
        .cloned()
        .collect();
    if !revisions.is_empty() {
        ops.push(Op::DeleteTaskDefinitions {
            arns: revisions,
            leftover: observed.inactive_task_definition_arns.len(),
        });
    }
    if let Some(c) = &observed.cluster
        && c.status != "INACTIVE"
        && owned(&c.tags, stack)
    {
        ops.push(Op::DeleteCluster);
    }
    if observed
        .log_group
        .as_ref()
        .is_some_and(|g| owned(&g.tags, stack))
        && kept_log_group(names, observed, force_destroy).is_none()
    {
        ops.push(Op::DeleteLogGroup);
    }
    for (kind, role) in &observed.roles {
        if owned(&role.tags, stack) {
            ops.push(Op::DeleteRole {
                kind: *kind,
                managed: role.managed.iter().cloned().collect(),
                inline: role.inline.keys().cloned().collect(),
            });
        }
    }
    ops
}

#[cfg(test)]
mod tests {

    use infra::StackName;

    use super::*;
    use crate::config::ComputeConfig;

    fn cx() -> Context {
        Context::mocked(StackName::new("demo").unwrap()).build()
    }

    fn desired(toml_text: &str) -> Desired {
        let config: ComputeConfig = toml::from_str(toml_text).unwrap();
        let inputs = ComputeInputs {
            private_subnet_ids: vec!["subnet-b".into(), "subnet-a".into()],
            task_security_group_id: "sg-1".into(),
            target_group_arn: "arn:tg".into(),
            load_balancer_arn_suffix: "app/demo/1".into(),
            target_group_arn_suffix: "targetgroup/demo/2".into(),
            container_port: 8080,
            default_image: "repo/sample-app:latest".into(),
            account_id: "123456789012".into(),
            linked: crate::Linked::default(),
        };
        Desired::new(
            &cx(),
            &infra::Config::validate(&config, &cx().scope()).unwrap(),
            &inputs,
        )
    }

    /// What AWS would report after a perfect apply of `d`.
    fn matching(d: &Desired) -> Observed {
        let roles = d
            .roles
            .iter()
            .map(|r| {
                (
                    r.kind,
                    RoleHave {
                        arn: format!("arn:aws:iam::1:role/{}", r.name),
                        trust: r.trust.clone(),
                        managed: r.managed.clone(),
                        inline: r.inline.clone(),
                        tags: r.tags.clone(),
                    },
                )
            })
            .collect();
        Observed {
            roles,
            cluster: Some(ClusterHave {
                arn: "arn:cluster".into(),
                status: "ACTIVE".into(),
                insights: Some("enabled".into()),
                tags: d.tags(CLUSTER),
            }),
            log_group: Some(LogGroupHave {
                arn: "arn:lg".into(),
                retention: Some(d.retention),
                tags: d.tags(LOG_GROUP),
                contents: None,
            }),
            task_definition: Some(TaskDefHave {
                arn: "arn:td:1".into(),
                shape: d.task.clone(),
                tags: d.tags(TASK_DEFINITION),
            }),
            service: Some(ServiceHave {
                arn: "arn:svc".into(),
                status: "ACTIVE".into(),
                task_definition: "arn:td:1".into(),
                desired_count: 5,
                shape: d.service.clone(),
                tags: d.tags(SERVICE),
            }),
            target: Some((d.min, d.max)),
            policies: d.policies.clone(),
            task_definition_arns: Vec::new(),
            inactive_task_definition_arns: Vec::new(),
        }
    }

    #[test]
    fn a_matching_stack_needs_nothing_whatever_its_desired_count() {
        let d = desired("");
        let o = matching(&d);
        assert_eq!(diff(&d, &o).unwrap(), []);
        // moto's answer lacks the deployment settings: not a difference.
        let mut moto = o.clone();
        if let Some(s) = moto.service.as_mut() {
            s.shape.full = None;
        }
        assert_eq!(diff(&d, &moto).unwrap(), []);
    }

    #[test]
    fn zone_count_keeps_the_first_subnets_in_zone_order() {
        let all = desired("");
        assert_eq!(
            all.service.subnets,
            BTreeSet::from(["subnet-a".to_owned(), "subnet-b".to_owned()])
        );
        // The inputs list subnet-b first: it is the first zone's.
        let one = desired("zone-count = 1");
        assert_eq!(one.service.subnets, BTreeSet::from(["subnet-b".to_owned()]));
    }

    #[test]
    fn drifted_service_settings_are_updated() {
        let d = desired("");
        let mut o = matching(&d);
        let s = o.service.as_mut().unwrap();
        let full = s.shape.full.as_mut().unwrap();
        full.deployment.circuit_breaker = false;
        full.grace = Some(0);
        s.shape.public_ip = Some("ENABLED".into());
        let ops = diff(&d, &o).unwrap();
        let [Op::UpdateService { why }] = ops.as_slice() else {
            panic!("{ops:?}")
        };
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(
            why.iter()
                .any(|w| w.starts_with("health check grace period 0 -> 60")),
            "{why:?}"
        );
    }

    #[test]
    fn a_changed_task_definition_means_a_new_revision_and_a_service_update() {
        let d = desired("");
        let mut o = matching(&d);
        let td = o.task_definition.as_mut().unwrap();
        td.shape.containers[0].image = "nginx".into();
        td.shape.containers[0]
            .environment
            .insert("X".into(), "1".into());
        let ops = diff(&d, &o).unwrap();
        assert!(
            matches!(&ops[0], Op::RegisterTaskDefinition { why } if why.len() == 2),
            "{ops:?}"
        );
        assert!(matches!(&ops[1], Op::UpdateService { .. }), "{ops:?}");
        assert_eq!(ops.len(), 2);
    }

    #[test]
    fn a_plan_names_changed_variables_and_secrets_but_never_their_values() {
        let d = desired("");
        let mut o = matching(&d);
        let c = &mut o.task_definition.as_mut().unwrap().shape.containers[0];
        c.environment.insert("GONE".into(), "hunter2".into());
        c.environment.insert("PORT".into(), "s3cr3t-port".into());
        c.secrets.insert(
            "DB".into(),
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:old-AbCdEf".into(),
        );
        let ops = diff(&d, &o).unwrap();
        let Op::RegisterTaskDefinition { why } = &ops[0] else {
            panic!("{ops:?}")
        };
        assert!(
            why.contains(&"container app environment ~PORT -GONE".to_owned()),
            "{why:?}"
        );
        assert!(
            why.contains(&"container app secrets -DB".to_owned()),
            "{why:?}"
        );
        let all = why.join("\n");
        assert!(
            !all.contains("hunter2") && !all.contains("s3cr3t") && !all.contains("old-AbCdEf"),
            "{all}"
        );
    }

    #[test]
    fn a_service_pointing_at_another_revision_is_updated() {
        let d = desired("");
        let mut o = matching(&d);
        o.service.as_mut().unwrap().task_definition = "arn:td:0".into();
        assert!(matches!(
            diff(&d, &o).unwrap().as_slice(),
            [Op::UpdateService { .. }]
        ));
    }

    #[test]
    fn service_lifecycle() {
        let d = desired("");
        let mut o = matching(&d);
        o.service.as_mut().unwrap().status = "DRAINING".into();
        assert_eq!(
            diff(&d, &o).unwrap(),
            [Op::WaitServiceInactive, Op::CreateService]
        );
        o.service.as_mut().unwrap().status = "INACTIVE".into();
        assert_eq!(diff(&d, &o).unwrap(), [Op::CreateService]);
        o.service.as_mut().unwrap().status = "ACTIVE".into();
        o.service.as_mut().unwrap().shape.launch_type = Some("EC2".into());
        let err = diff(&d, &o).unwrap_err();
        assert!(err.to_string().contains("launch type EC2"), "{err}");
    }

    #[test]
    fn roles_policies_logs_cluster_and_scaling_drift() {
        let d = desired("log-retention-days = 7");
        let mut o = matching(&desired(""));
        let exec = o.roles.get_mut(&RoleKind::Execution).unwrap();
        exec.trust = normalize_policy(&json!({"Statement": []}));
        exec.managed
            .insert("arn:aws:iam::aws:policy/AdministratorAccess".into());
        exec.tags.remove("Name");
        o.cluster.as_mut().unwrap().insights = Some("disabled".into());
        o.target = Some((1, 3));
        o.policies.values_mut().for_each(|p| p.target = 1.0);
        let ops = diff(&d, &o).unwrap();
        assert_eq!(
            ops,
            [
                Op::UpdateTrust(RoleKind::Execution),
                Op::DetachPolicy(
                    RoleKind::Execution,
                    "arn:aws:iam::aws:policy/AdministratorAccess".into()
                ),
                Op::TagRole(
                    RoleKind::Execution,
                    BTreeMap::from([("Name".into(), "demo-execution-role".into())])
                ),
                Op::PutRetention { was: Some(30) },
                Op::UpdateInsights {
                    was: Some("disabled".into())
                },
                Op::RegisterTarget { was: Some((1, 3)) },
                Op::PutPolicy {
                    name: "demo-cpu".into(),
                    exists: true,
                    why: vec!["ECSServiceAverageCPUUtilization 1 -> 60, cooldowns out/in 60/300 -> 60/300".into()]
                },
                Op::PutPolicy {
                    name: "demo-requests".into(),
                    exists: true,
                    why: vec!["ALBRequestCountPerTarget 1 -> 6000, cooldowns out/in 60/300 -> 60/300".into()]
                },
            ]
        );
    }

    #[test]
    fn inline_policies_follow_the_statements() {
        let with = desired(
            r#"task-role-statements = [{ Effect = "Allow", Action = "s3:GetObject", Resource = "*" }]"#,
        );
        let o = matching(&desired(""));
        assert_eq!(
            diff(&with, &o).unwrap(),
            [Op::PutInline(RoleKind::Task, "demo-task".into())]
        );
        assert_eq!(
            diff(&desired(""), &matching(&with)).unwrap(),
            [Op::DeleteInline(RoleKind::Task, "demo-task".into())]
        );
    }

    #[test]
    fn foreign_resources_are_refused_and_never_torn_down() {
        let d = desired("");
        let mut o = matching(&d);
        o.cluster.as_mut().unwrap().tags.clear();
        assert!(matches!(
            diff(&d, &o),
            Err(Error::NotOurs {
                kind: "ECS cluster",
                ..
            })
        ));
        let ops = teardown(&d.names, &o, false);
        assert!(!ops.contains(&Op::DeleteCluster), "{ops:?}");
        assert!(ops.contains(&Op::DeleteService), "{ops:?}");
    }

    #[test]
    fn teardown_order() {
        let d = desired("");
        let mut o = matching(&d);
        o.task_definition_arns = vec!["arn:td:1".into()];
        o.inactive_task_definition_arns = vec!["arn:td:0".into()];
        let ops = teardown(&d.names, &o, false);
        let names: Vec<String> = ops
            .iter()
            .map(|op| {
                format!("{op:?}")
                    .split([' ', '(', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "DeletePolicy",
                "DeletePolicy",
                "DeregisterTarget",
                "ScaleToZero",
                "DeleteService",
                "WaitServiceInactive",
                "DeregisterTaskDefinition",
                "DeleteTaskDefinitions",
                "DeleteCluster",
                "DeleteLogGroup",
                "DeleteRole",
                "DeleteRole",
                "DeleteRole"
            ]
        );
    }

    #[test]
    fn a_log_group_that_holds_logs_is_kept_unless_force_destroy() {
        let d = desired("");
        let mut o = matching(&d);
        let deletes =
            |o: &Observed, force| teardown(&d.names, o, force).contains(&Op::DeleteLogGroup);
        // Contents not read, or read and empty: deleted.
        assert!(deletes(&o, false));
        let group = o.log_group.as_mut().unwrap();
        group.contents = Some(LogContents {
            newest_stream: None,
            stored_bytes: 0,
        });
        assert!(deletes(&o, false));
        // A stream: kept, and said so; force-destroy deletes it.
        o.log_group.as_mut().unwrap().contents = Some(LogContents {
            newest_stream: Some("web/web/abc".into()),
            stored_bytes: 2048,
        });
        assert!(!deletes(&o, false));
        assert!(deletes(&o, true));
        let kept = kept_log_group(&d.names, &o, false).unwrap();
        assert_eq!(kept.action, infra::Action::Keep);
        let text = kept.to_string();
        assert!(text.starts_with("= keep compute log-group"), "{text}");
        assert!(
            text.contains("newest stream web/web/abc, 2048 bytes stored"),
            "{text}"
        );
        assert!(
            text.contains("`force-destroy = true` in [service]"),
            "{text}"
        );
        assert_eq!(kept_log_group(&d.names, &o, true), None);
        // Not the stack's: neither deleted nor kept.
        o.log_group.as_mut().unwrap().tags.clear();
        assert!(!deletes(&o, true));
        assert_eq!(kept_log_group(&d.names, &o, false), None);
    }

    #[test]
    fn policy_documents_compare_semantically() {
        let a = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": ["b", "a"], "Resource": ["*"]}});
        let b = json!({"Statement": [{"Resource": "*", "Action": ["a", "b"], "Effect": "Allow"}], "Version": "2012-10-17"});
        assert_eq!(normalize_policy(&a), normalize_policy(&b));
    }
}
