//! The network's configuration: what users write, and the checked [`NetworkSpec`] it becomes.

use infra::{Problems, Scope};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// How private subnets reach the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatMode {
    /// One NAT gateway in each AZ: an AZ failure does not cut the others off. The default.
    #[default]
    PerAz,
    /// One NAT gateway in the first AZ, shared: cheaper, but a single point of failure.
    Single,
    /// No NAT gateway: private subnets have no route to the internet.
    None,
}

/// Ingress rules of the load balancer's security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngressConfig {
    /// TCP ports open to the sources below. Default `[80, 443]`.
    pub ports: Vec<u16>,
    /// IPv4 sources. Default `["0.0.0.0/0"]`.
    pub ipv4_cidrs: Vec<String>,
    /// IPv6 sources. Default `["::/0"]`.
    pub ipv6_cidrs: Vec<String>,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            ports: vec![80, 443],
            ipv4_cidrs: vec!["0.0.0.0/0".to_owned()],
            ipv6_cidrs: vec!["::/0".to_owned()],
        }
    }
}

/// The `[network]` table of `stack.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkConfig {
    /// The VPC's IPv4 CIDR block, /16 to /28. Default `10.0.0.0/16`.
    pub vpc_cidr: String,
    /// How many availability zones to spread over. Default 2; at most what the region has.
    pub az_count: u8,
    /// The zones by name (`eu-west-1a`, ...). Default: the region's first `az-count` zones.
    pub availability_zones: Option<Vec<String>>,
    /// One public subnet CIDR per AZ. Default: derived from the VPC CIDR (4 more prefix bits,
    /// blocks 0, 1, 2, ...).
    pub public_subnet_cidrs: Option<Vec<String>>,
    /// One private subnet CIDR per AZ. Default: derived (blocks 8, 9, 10, ...).
    pub private_subnet_cidrs: Option<Vec<String>>,
    /// NAT gateways: `per-az` (default), `single` or `none`.
    pub nat: NatMode,
    /// Who may reach the load balancer. Default: ports 80 and 443 from anywhere, IPv4 and IPv6.
    pub load_balancer_ingress: IngressConfig,
    /// The port the tasks listen on; only the load balancer's security group may reach it.
    /// Default 8080.
    pub task_port: u16,
    /// VPC endpoints, by service (`s3` a gateway endpoint on the private route tables, the
    /// others interface endpoints in the private subnets with private DNS, reachable on 443
    /// from the VPC): what the tasks reach AWS through without a NAT gateway. One of
    /// [`ENDPOINT_SERVICES`]. Default: with `nat = "none"` what a Fargate task needs to start
    /// (`ecr.api`, `ecr.dkr`, `s3` for the image layers, `logs`); otherwise none.
    pub vpc_endpoints: Option<Vec<String>>,
}

/// The services `vpc-endpoints` may name.
pub const ENDPOINT_SERVICES: &[&str] = &[
    "ecr.api",
    "ecr.dkr",
    "s3",
    "logs",
    "secretsmanager",
    "ssm",
    "kms",
    "sts",
    "monitoring",
];

/// What a Fargate task pulling from ECR and logging to CloudWatch needs without a NAT gateway
/// (ECS Developer Guide, "Amazon ECS interface VPC endpoints"; ECR's layers are in S3).
pub const NO_NAT_ENDPOINTS: &[&str] = &["ecr.api", "ecr.dkr", "s3", "logs"];

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            vpc_cidr: "10.0.0.0/16".to_owned(),
            az_count: 2,
            availability_zones: None,
            public_subnet_cidrs: None,
            private_subnet_cidrs: None,
            nat: NatMode::PerAz,
            load_balancer_ingress: IngressConfig::default(),
            task_port: 8080,
            vpc_endpoints: None,
        }
    }
}

/// Which zones to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zones {
    /// The region's first `n` available zones, in name order (asked of AWS at plan time).
    First(usize),
    /// These zones.
    Named(Vec<String>),
}

impl Zones {
    /// How many zones.
    pub fn count(&self) -> usize {
        match self {
            Zones::First(n) => *n,
            Zones::Named(names) => names.len(),
        }
    }
}

/// A checked network configuration: built only by [`infra::Config::validate`] of a
/// [`NetworkConfig`], so every value in it passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// The VPC CIDR.
    pub(crate) vpc_cidr: Ipv4Net,
    /// The zones.
    pub(crate) zones: Zones,
    /// Public subnet CIDRs, one per zone, in zone order.
    pub(crate) public_cidrs: Vec<Ipv4Net>,
    /// Private subnet CIDRs, one per zone, in zone order.
    pub(crate) private_cidrs: Vec<Ipv4Net>,
    /// NAT mode.
    pub(crate) nat: NatMode,
    /// Load balancer ports.
    pub(crate) lb_ports: Vec<u16>,
    /// Load balancer IPv4 sources.
    pub lb_ipv4: Vec<Ipv4Net>,
    /// Load balancer IPv6 sources.
    pub lb_ipv6: Vec<Ipv6Net>,
    /// The tasks' port.
    pub(crate) task_port: u16,
    /// VPC endpoints by service, sorted (see [`NetworkConfig::vpc_endpoints`]).
    pub(crate) endpoints: Vec<String>,
}

impl NetworkSpec {
    /// The VPC's CIDR block.
    pub fn vpc_cidr(&self) -> Ipv4Net {
        self.vpc_cidr
    }

    /// The zones: the first N of the region, or those named.
    pub fn zones(&self) -> &Zones {
        &self.zones
    }

    /// The private subnets' CIDR blocks, one per zone, in zone order.
    pub fn private_cidrs(&self) -> &[Ipv4Net] {
        &self.private_cidrs
    }

    /// The port the tasks listen on (the tasks' security group opens it to the load balancer).
    pub fn task_port(&self) -> u16 {
        self.task_port
    }
}

/// Zones per region, for checking `az-count` before any call. Regions not listed are checked
/// against what AWS answers, still before anything is created.
const REGION_ZONES: &[(&str, usize)] = &[
    ("us-east-1", 6),
    ("us-east-2", 3),
    ("us-west-1", 2),
    ("us-west-2", 4),
    ("ca-central-1", 3),
    ("eu-west-1", 3),
    ("eu-west-2", 3),
    ("eu-west-3", 3),
    ("eu-central-1", 3),
    ("eu-north-1", 3),
    ("ap-south-1", 3),
    ("ap-northeast-1", 3),
    ("ap-northeast-2", 4),
    ("ap-southeast-1", 3),
    ("ap-southeast-2", 3),
    ("sa-east-1", 3),
];

/// The number of zones `region` has, when known without asking AWS.
pub fn known_zone_count(region: &str) -> Option<usize> {
    REGION_ZONES
        .iter()
        .find(|(r, _)| *r == region)
        .map(|(_, n)| *n)
}

const MAX_ZONES: usize = 6;
const SUBNET_BITS: u8 = 4;
const PRIVATE_OFFSET: usize = 8;
/// The longest prefix of a subnet an Application Load Balancer accepts: "/27 bitmask" with "at
/// least 8 free IP addresses" (Elastic Load Balancing, Application Load Balancers, "Subnets for
/// your load balancer").
const ALB_SUBNET_MAX_PREFIX: u8 = 27;

impl NetworkConfig {
    /// Checks the configuration for `region`, every problem naming its field as `[network]`
    /// does (`vpc-cidr`).
    fn check(&self, region: &str) -> Result<NetworkSpec, Problems> {
        let mut problems = Problems::default();
        let field = |name: &str| name.to_owned();

        let vpc_cidr = self.check_vpc_cidr(&mut problems);

        let zones = self.check_zones(region, &field, &mut problems);
        let count = zones.as_ref().map(Zones::count);

        let public = self.subnet_cidrs(
            "public-subnet-cidrs",
            self.public_subnet_cidrs.as_deref(),
            0,
            vpc_cidr,
            count,
            &field,
            &mut problems,
        );
        if let Some(public) = &public {
            self.check_public_fit(public, &mut problems);
        }
        let private = self.subnet_cidrs(
            "private-subnet-cidrs",
            self.private_subnet_cidrs.as_deref(),
            PRIVATE_OFFSET,
            vpc_cidr,
            count,
            &field,
            &mut problems,
        );
        if let (Some(public), Some(private)) = (&public, &private) {
            check_overlaps(public, private, &field, &mut problems);
        }

        let (lb_ipv4, lb_ipv6) = self.check_ingress(&mut problems);
        if self.task_port == 0 {
            problems.add(field("task-port"), 0, "a TCP port from 1 to 65535");
        }
        let endpoints = self.check_endpoints(&mut problems);

        match (vpc_cidr, zones, public, private) {
            (Some(vpc_cidr), Some(zones), Some(public_cidrs), Some(private_cidrs))
                if problems.0.is_empty() =>
            {
                let mut lb_ports = self.load_balancer_ingress.ports.clone();
                lb_ports.sort_unstable();
                lb_ports.dedup();
                Ok(NetworkSpec {
                    vpc_cidr,
                    zones,
                    public_cidrs,
                    private_cidrs,
                    nat: self.nat,
                    lb_ports,
                    lb_ipv4,
                    lb_ipv6,
                    task_port: self.task_port,
                    endpoints,
                })
            }
            _ => Err(problems),
        }
    }

    /// `vpc-cidr`: a network address with a prefix AWS allows.
    fn check_vpc_cidr(&self, problems: &mut Problems) -> Option<Ipv4Net> {
        match self.vpc_cidr.parse::<Ipv4Net>() {
            Ok(net) if net != net.trunc() => {
                problems.add(
                    "vpc-cidr",
                    format!("{:?}", self.vpc_cidr),
                    format!(
                        "a network address: host bits must be zero (did you mean {}?)",
                        net.trunc()
                    ),
                );
                None
            }
            Ok(net) if !(16..=28).contains(&net.prefix_len()) => {
                problems.add(
                    "vpc-cidr",
                    format!("{:?}", self.vpc_cidr),
                    "a prefix from /16 to /28 (AWS's VPC limits)",
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                problems.add(
                    "vpc-cidr",
                    format!("{:?}", self.vpc_cidr),
                    "an IPv4 CIDR block such as \"10.0.0.0/16\"",
                );
                None
            }
        }
    }

    /// The load balancer lives in the public subnets: AWS wants a /27 or larger one with 8
    /// free addresses in each zone it uses (CreateLoadBalancer fails otherwise, after the
    /// network exists).
    fn check_public_fit(&self, public: &[Ipv4Net], problems: &mut Problems) {
        for (i, net) in public.iter().enumerate() {
            if net.prefix_len() <= ALB_SUBNET_MAX_PREFIX {
                continue;
            }
            if self.public_subnet_cidrs.is_some() {
                problems.add(
                    format!("public-subnet-cidrs[{i}]"),
                    format!("\"{net}\""),
                    format!("a /{ALB_SUBNET_MAX_PREFIX} or larger block: the load balancer needs a /{ALB_SUBNET_MAX_PREFIX} or larger subnet with 8 free addresses in each zone"),
                );
            } else {
                problems.add(
                    "vpc-cidr",
                    format!("{:?}", self.vpc_cidr),
                    format!(
                        "a /{} or larger VPC: public subnets are derived with {SUBNET_BITS} more bits, and the load balancer needs /{ALB_SUBNET_MAX_PREFIX} or larger ones (this gives {net}); or give {} yourself",
                        ALB_SUBNET_MAX_PREFIX - SUBNET_BITS,
                        "public-subnet-cidrs"
                    ),
                );
                break;
            }
        }
    }

    /// `load-balancer-ingress`: ports and at least one source; returns the sources.
    fn check_ingress(&self, problems: &mut Problems) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
        let ingress = &self.load_balancer_ingress;
        if ingress.ports.is_empty() || ingress.ports.contains(&0) {
            problems.add(
                "load-balancer-ingress.ports",
                format!("{:?}", ingress.ports),
                "one or more TCP ports from 1 to 65535",
            );
        }
        let lb_ipv4: Vec<Ipv4Net> = ingress
            .ipv4_cidrs
            .iter()
            .filter_map(|c| match c.parse::<Ipv4Net>() {
                Ok(n) => Some(n.trunc()),
                Err(_) => {
                    problems.add(
                        "load-balancer-ingress.ipv4-cidrs",
                        format!("{c:?}"),
                        "IPv4 CIDR blocks such as \"0.0.0.0/0\"",
                    );
                    None
                }
            })
            .collect();
        let lb_ipv6: Vec<Ipv6Net> = ingress
            .ipv6_cidrs
            .iter()
            .filter_map(|c| match c.parse::<Ipv6Net>() {
                Ok(n) => Some(n.trunc()),
                Err(_) => {
                    problems.add(
                        "load-balancer-ingress.ipv6-cidrs",
                        format!("{c:?}"),
                        "IPv6 CIDR blocks such as \"::/0\"",
                    );
                    None
                }
            })
            .collect();
        if ingress.ipv4_cidrs.is_empty() && ingress.ipv6_cidrs.is_empty() {
            problems.add(
                "load-balancer-ingress",
                "no sources",
                "at least one IPv4 or IPv6 CIDR: with none, nothing can reach the load balancer",
            );
        }
        (lb_ipv4, lb_ipv6)
    }

    /// `vpc-endpoints`: known services, each once (by default, without NAT, the ones a
    /// Fargate task needs to start).
    fn check_endpoints(&self, problems: &mut Problems) -> Vec<String> {
        let endpoints = match &self.vpc_endpoints {
            Some(list) => list.clone(),
            None if self.nat == NatMode::None => {
                NO_NAT_ENDPOINTS.iter().map(|s| (*s).to_owned()).collect()
            }
            None => Vec::new(),
        };
        let mut seen = std::collections::BTreeSet::new();
        for e in &endpoints {
            if !ENDPOINT_SERVICES.contains(&e.as_str()) {
                problems.add(
                    "vpc-endpoints",
                    format!("{e:?}"),
                    format!("services of {ENDPOINT_SERVICES:?}"),
                );
            } else if !seen.insert(e.clone()) {
                problems.add("vpc-endpoints", format!("{e:?}"), "each service once");
            }
        }
        seen.into_iter().collect()
    }

    fn check_zones(
        &self,
        region: &str,
        field: &dyn Fn(&str) -> String,
        problems: &mut Problems,
    ) -> Option<Zones> {
        let known = known_zone_count(region);
        let limit = known.unwrap_or(MAX_ZONES);
        let allowed_count = match known {
            Some(n) => format!("1 to {n} ({region} has {n} availability zones)"),
            None => format!("1 to {MAX_ZONES}"),
        };
        match &self.availability_zones {
            None => {
                let n = usize::from(self.az_count);
                if n == 0 || n > limit {
                    problems.add(field("az-count"), n, allowed_count);
                    return None;
                }
                Some(Zones::First(n))
            }
            Some(names) => {
                let before = problems.0.len();
                if names.is_empty() || names.len() > limit {
                    problems.add(
                        field("availability-zones"),
                        format!("{names:?}"),
                        format!("{allowed_count} zone names"),
                    );
                }
                if self.az_count != 2 && usize::from(self.az_count) != names.len() {
                    problems.add(
                        field("az-count"),
                        self.az_count,
                        format!(
                            "{} to match availability-zones, or leave az-count out",
                            names.len()
                        ),
                    );
                }
                for (i, name) in names.iter().enumerate() {
                    let ok = name.strip_prefix(region).is_some_and(|rest| {
                        rest.len() == 1 && rest.chars().all(|c| c.is_ascii_lowercase())
                    });
                    if !ok {
                        problems.add(
                            format!("{}[{i}]", field("availability-zones")),
                            format!("{name:?}"),
                            format!("a zone of region {region}: {region} followed by one letter, like \"{region}a\""),
                        );
                    }
                    if names[..i].contains(name) {
                        problems.add(
                            format!("{}[{i}]", field("availability-zones")),
                            format!("{name:?}"),
                            "each zone once",
                        );
                    }
                }
                (problems.0.len() == before).then(|| Zones::Named(names.clone()))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn subnet_cidrs(
        &self,
        name: &str,
        given: Option<&[String]>,
        offset: usize,
        vpc: Option<Ipv4Net>,
        count: Option<usize>,
        field: &dyn Fn(&str) -> String,
        problems: &mut Problems,
    ) -> Option<Vec<Ipv4Net>> {
        let vpc = vpc?;
        let count = count?;
        match given {
            None => {
                let prefix = vpc.prefix_len() + SUBNET_BITS;
                if prefix > 28 {
                    problems.add(
                        field("vpc-cidr"),
                        format!("{:?}", self.vpc_cidr),
                        format!(
                            "a prefix of /24 or shorter to derive subnets (each gets {SUBNET_BITS} more bits and AWS subnets stop at /28), or give {} and {} yourself",
                            field("public-subnet-cidrs"),
                            field("private-subnet-cidrs")
                        ),
                    );
                    return None;
                }
                let blocks: Vec<Ipv4Net> =
                    vpc.subnets(prefix).ok()?.skip(offset).take(count).collect();
                Some(blocks)
            }
            Some(list) => {
                let before = problems.0.len();
                if list.len() != count {
                    problems.add(
                        field(name),
                        format!("{list:?}"),
                        format!("exactly {count} CIDRs, one per availability zone"),
                    );
                }
                let mut nets = Vec::new();
                for (i, text) in list.iter().enumerate() {
                    let f = format!("{}[{i}]", field(name));
                    match text.parse::<Ipv4Net>() {
                        Err(_) => problems.add(
                            f,
                            format!("{text:?}"),
                            "an IPv4 CIDR block such as \"10.0.0.0/20\"",
                        ),
                        Ok(net) if net != net.trunc() => problems.add(
                            f,
                            format!("{text:?}"),
                            format!(
                                "a network address: host bits must be zero (did you mean {}?)",
                                net.trunc()
                            ),
                        ),
                        Ok(net) if !(16..=28).contains(&net.prefix_len()) => problems.add(
                            f,
                            format!("{text:?}"),
                            "a prefix from /16 to /28 (AWS's subnet limits)",
                        ),
                        Ok(net) if !vpc.contains(&net) => problems.add(
                            f,
                            format!("{text:?}"),
                            format!("a block inside the VPC CIDR {vpc}"),
                        ),
                        Ok(net) => nets.push(net),
                    }
                }
                (problems.0.len() == before).then_some(nets)
            }
        }
    }
}

fn check_overlaps(
    public: &[Ipv4Net],
    private: &[Ipv4Net],
    field: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) {
    let all: Vec<(String, Ipv4Net)> = public
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("{}[{i}]", field("public-subnet-cidrs")), *n))
        .chain(
            private
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("{}[{i}]", field("private-subnet-cidrs")), *n)),
        )
        .collect();
    for (i, (name_a, a)) in all.iter().enumerate() {
        for (name_b, b) in &all[..i] {
            if overlaps(a, b) {
                problems.add(
                    name_a.clone(),
                    format!("\"{a}\""),
                    format!("a block that does not overlap {name_b} ({b})"),
                );
            }
        }
    }
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl infra::Config for NetworkConfig {
    type Spec = NetworkSpec;

    /// Checks the configuration for the scope's region (its zones). Reports every problem, not
    /// the first.
    fn validate(&self, scope: &Scope<'_>) -> Result<NetworkSpec, Problems> {
        self.check(scope.region())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infra::Config as _;

    fn check(toml_text: &str, region: &str) -> Result<NetworkSpec, Problems> {
        let config: NetworkConfig = toml::from_str(toml_text).expect("parses");
        config
            .validate(&Scope::new("web", region))
            .map_err(|p| p.within("network"))
    }

    fn problems(toml_text: &str, region: &str) -> Vec<String> {
        check(toml_text, region)
            .unwrap_err()
            .0
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn defaults_derive_two_zones_of_subnets() {
        let spec = check("", "eu-west-1").unwrap();
        assert_eq!(spec.zones, Zones::First(2));
        let show = |v: &[Ipv4Net]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(show(&spec.public_cidrs), ["10.0.0.0/20", "10.0.16.0/20"]);
        assert_eq!(
            show(&spec.private_cidrs),
            ["10.0.128.0/20", "10.0.144.0/20"]
        );
        assert_eq!(spec.nat, NatMode::PerAz);
        assert_eq!(spec.lb_ports, [80, 443]);
        assert_eq!(spec.task_port, 8080);
    }

    #[test]
    fn three_named_zones_and_explicit_cidrs() {
        let spec = check(
            r#"
            vpc-cidr = "172.20.0.0/22"
            availability-zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
            public-subnet-cidrs = ["172.20.0.0/26", "172.20.0.64/26", "172.20.0.128/26"]
            private-subnet-cidrs = ["172.20.1.0/24", "172.20.2.0/24", "172.20.3.0/24"]
            nat = "single"
            "#,
            "eu-west-1",
        )
        .unwrap();
        assert_eq!(spec.zones.count(), 3);
        assert_eq!(spec.nat, NatMode::Single);
    }

    #[test]
    fn every_problem_is_reported_with_field_value_and_rule() {
        let found = problems(
            r#"
            vpc-cidr = "10.0.0.0/33"
            az-count = 4
            task-port = 0
            load-balancer-ingress = { ports = [0], ipv4-cidrs = ["nope"], ipv6-cidrs = ["::/200"] }
            "#,
            "eu-west-1",
        );
        assert_eq!(
            found,
            [
                "network.vpc-cidr = \"10.0.0.0/33\": an IPv4 CIDR block such as \"10.0.0.0/16\"",
                "network.az-count = 4: 1 to 3 (eu-west-1 has 3 availability zones)",
                "network.load-balancer-ingress.ports = [0]: one or more TCP ports from 1 to 65535",
                "network.load-balancer-ingress.ipv4-cidrs = \"nope\": IPv4 CIDR blocks such as \"0.0.0.0/0\"",
                "network.load-balancer-ingress.ipv6-cidrs = \"::/200\": IPv6 CIDR blocks such as \"::/0\"",
                "network.task-port = 0: a TCP port from 1 to 65535",
            ]
        );
    }

    #[test]
    fn malformed_and_misplaced_cidrs() {
        let cases: &[(&str, &str)] = &[
            (
                "vpc-cidr = \"10.0.0.1/16\"",
                "network.vpc-cidr = \"10.0.0.1/16\": a network address: host bits must be zero (did you mean 10.0.0.0/16?)",
            ),
            (
                "vpc-cidr = \"10.0.0.0/8\"",
                "network.vpc-cidr = \"10.0.0.0/8\": a prefix from /16 to /28 (AWS's VPC limits)",
            ),
            (
                "vpc-cidr = \"10.0.0.0/26\"",
                "network.vpc-cidr = \"10.0.0.0/26\": a prefix of /24 or shorter to derive subnets (each gets 4 more bits and AWS subnets stop at /28), or give public-subnet-cidrs and private-subnet-cidrs yourself",
            ),
            (
                "public-subnet-cidrs = [\"10.0.0.0/24\"]",
                "network.public-subnet-cidrs = [\"10.0.0.0/24\"]: exactly 2 CIDRs, one per availability zone",
            ),
            (
                "public-subnet-cidrs = [\"10.0.0.0/24\", \"10.1.0.0/24\"]",
                "network.public-subnet-cidrs[1] = \"10.1.0.0/24\": a block inside the VPC CIDR 10.0.0.0/16",
            ),
            (
                "public-subnet-cidrs = [\"10.0.0.0/24\", \"10.0.0.128/25\"]",
                "network.public-subnet-cidrs[1] = \"10.0.0.128/25\": a block that does not overlap public-subnet-cidrs[0] (10.0.0.0/24)",
            ),
            (
                "private-subnet-cidrs = [\"10.0.0.0/20\", \"10.0.144.0/20\"]",
                "network.private-subnet-cidrs[0] = \"10.0.0.0/20\": a block that does not overlap public-subnet-cidrs[0] (10.0.0.0/20)",
            ),
            (
                "public-subnet-cidrs = [\"10.0.0.0/29\", \"x\"]",
                "network.public-subnet-cidrs[0] = \"10.0.0.0/29\": a prefix from /16 to /28 (AWS's subnet limits)",
            ),
            // A /28 is a subnet AWS makes, but no load balancer goes into it.
            (
                "public-subnet-cidrs = [\"10.0.0.0/28\", \"10.0.1.0/24\"]",
                "network.public-subnet-cidrs[0] = \"10.0.0.0/28\": a /27 or larger block: the load balancer needs a /27 or larger subnet with 8 free addresses in each zone",
            ),
            (
                "vpc-cidr = \"10.0.0.0/24\"",
                "network.vpc-cidr = \"10.0.0.0/24\": a /23 or larger VPC: public subnets are derived with 4 more bits, and the load balancer needs /27 or larger ones (this gives 10.0.0.0/28); or give public-subnet-cidrs yourself",
            ),
        ];
        for (input, expected) in cases {
            let found = problems(input, "eu-west-1");
            assert!(found.iter().any(|p| p == expected), "{input}: {found:#?}");
        }
    }

    #[test]
    fn a_23_vpc_derives_public_subnets_a_load_balancer_takes() {
        let spec = check("vpc-cidr = \"10.0.0.0/23\"", "eu-west-1").unwrap();
        assert!(
            spec.public_cidrs.iter().all(|n| n.prefix_len() == 27),
            "{spec:?}"
        );
    }

    #[test]
    fn zones_must_belong_to_the_region_and_fit_it() {
        let found = problems(
            "availability-zones = [\"us-east-1a\", \"eu-west-1a\", \"eu-west-1a\"]",
            "eu-west-1",
        );
        assert!(found.contains(&"network.availability-zones[0] = \"us-east-1a\": a zone of region eu-west-1: eu-west-1 followed by one letter, like \"eu-west-1a\"".to_owned()), "{found:#?}");
        assert!(
            found.contains(
                &"network.availability-zones[2] = \"eu-west-1a\": each zone once".to_owned()
            ),
            "{found:#?}"
        );
        assert_eq!(
            problems("az-count = 3", "us-west-1"),
            ["network.az-count = 3: 1 to 2 (us-west-1 has 2 availability zones)"]
        );
        assert_eq!(
            problems("az-count = 0", "eu-west-1"),
            ["network.az-count = 0: 1 to 3 (eu-west-1 has 3 availability zones)"]
        );
        // Unknown regions are checked against AWS later; only the hard limit applies here.
        assert!(check("az-count = 5", "xx-test-9").is_ok());
        assert_eq!(
            problems("az-count = 7", "xx-test-9"),
            ["network.az-count = 7: 1 to 6"]
        );
    }

    #[test]
    fn vpc_endpoints_default_to_what_a_task_needs_without_nat_and_are_checked() {
        let spec = |toml: &str| check(toml, "eu-west-1").unwrap().endpoints;
        assert!(spec("").is_empty());
        assert!(spec("nat = \"single\"").is_empty());
        assert_eq!(spec("nat = \"none\""), ["ecr.api", "ecr.dkr", "logs", "s3"]);
        assert_eq!(spec("vpc-endpoints = [\"ssm\", \"s3\"]"), ["s3", "ssm"]);
        assert!(spec("nat = \"none\"\nvpc-endpoints = []").is_empty());
        let p = problems(
            "vpc-endpoints = [\"s3\", \"dynamodb\", \"s3\"]",
            "eu-west-1",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("network.vpc-endpoints = \"dynamodb\": services of ["),
            "{p:?}"
        );
        assert_eq!(p[1], "network.vpc-endpoints = \"s3\": each service once");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = toml::from_str::<NetworkConfig>("vpc-cidrs = \"10.0.0.0/16\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `vpc-cidrs`"), "{err}");
        let err = toml::from_str::<NetworkConfig>("nat = \"sometimes\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `sometimes`"), "{err}");
    }
}
