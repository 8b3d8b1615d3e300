//! A secret of the container as `[service.secrets]` names it, and what the execution role
//! needs to read it.

/// Where a secret of the container comes from: what ECS's `valueFrom` takes. Serialized as
/// that reference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Secret {
    /// A Secrets Manager secret by full ARN (ECS takes no name for these).
    SecretsManager {
        /// As written: the ARN, possibly with `:json-key:version-stage:version-id`.
        value_from: String,
        /// The secret's ARN alone (the first seven `:` fields): what IAM names.
        arn: String,
    },
    /// An SSM parameter by full ARN.
    ParameterArn(String),
    /// An SSM parameter of the stack's region by name (`/a/b` or `a_b`).
    ParameterName(String),
}

impl From<Secret> for String {
    fn from(secret: Secret) -> String {
        secret.value_from().to_owned()
    }
}

impl TryFrom<String> for Secret {
    type Error = String;

    fn try_from(reference: String) -> Result<Secret, String> {
        Secret::parse(&reference)
    }
}

/// The partitions an ARN may name.
const PARTITIONS: &[&str] = &["aws", "aws-cn", "aws-us-gov"];

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Secret {
    const ALLOWED: &'static str = "a Secrets Manager secret's full ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-abcdef, optionally followed by :json-key:version-stage:version-id), an SSM parameter's ARN (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME) or an SSM parameter's name in the stack's region (/a/b: letters, digits and _ . - /, at most 2048 characters, not starting with aws or ssm)";

    /// Reads a reference as `[service.secrets]` holds it; `Err` says what is allowed.
    pub fn parse(reference: &str) -> Result<Secret, String> {
        let bad = |why: &str| Err(format!("{}; {why}", Self::ALLOWED));
        if let Some(rest) = reference.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.split(':').collect();
            let head_ok = parts.len() >= 5
                && PARTITIONS.contains(&parts[0])
                && is_region(parts[2])
                && is_account(parts[3]);
            return match parts.get(1).copied() {
                Some("secretsmanager") if head_ok => {
                    let name_ok = parts.len() >= 6 && parts[4] == "secret" && !parts[5].is_empty();
                    if !name_ok || !(parts.len() == 6 || parts.len() == 9) {
                        return bad(
                            "this ARN is not a secret's ARN with nothing or all three of :json-key:version-stage:version-id after it",
                        );
                    }
                    Ok(Secret::SecretsManager {
                        value_from: reference.to_owned(),
                        arn: format!("arn:{}", parts[..6].join(":")),
                    })
                }
                Some("ssm") if head_ok => {
                    let name = parts[4..].join(":");
                    match name.strip_prefix("parameter/") {
                        Some(n) if parts.len() == 5 && is_parameter_name(n) => {
                            Ok(Secret::ParameterArn(reference.to_owned()))
                        }
                        _ => bad("this ARN is not a parameter's ARN"),
                    }
                }
                Some("secretsmanager" | "ssm") => bad(
                    "the ARN needs a partition (aws, aws-cn, aws-us-gov), a region and a 12-digit account",
                ),
                _ => bad("the ARN names another service"),
            };
        }
        if is_parameter_name(reference) {
            Ok(Secret::ParameterName(reference.to_owned()))
        } else {
            bad("a Secrets Manager secret needs its full ARN, which ECS requires")
        }
    }

    /// The `valueFrom` of the container definition.
    pub fn value_from(&self) -> &str {
        match self {
            Secret::SecretsManager { value_from, .. } => value_from,
            Secret::ParameterArn(s) | Secret::ParameterName(s) => s,
        }
    }

    /// The IAM action the execution role needs and the resource it needs it on, for a task
    /// in `region` of `account` in `partition`.
    pub fn grant(&self, partition: &str, region: &str, account: &str) -> (&'static str, String) {
        match self {
            Secret::SecretsManager { arn, .. } => ("secretsmanager:GetSecretValue", arn.clone()),
            Secret::ParameterArn(arn) => ("ssm:GetParameters", arn.clone()),
            Secret::ParameterName(name) => (
                "ssm:GetParameters",
                format!(
                    "arn:{partition}:ssm:{region}:{account}:parameter/{}",
                    name.trim_start_matches('/')
                ),
            ),
        }
    }
}

/// An SSM parameter name: `[a-zA-Z0-9_.-/]`, 1 to 2048 characters, not beginning with `aws`
/// or `ssm` (any case, with or without a leading `/`), at most 15 levels.
fn is_parameter_name(name: &str) -> bool {
    let bare = name.trim_start_matches('/').to_ascii_lowercase();
    !name.is_empty()
        && name.len() <= 2048
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b))
        && !bare.is_empty()
        && !bare.starts_with("aws")
        && !bare.starts_with("ssm")
        && name.split('/').filter(|p| !p.is_empty()).count() <= 15
}
