//! The access-log bucket's policy and the repository's lifecycle policy, as JSON.
//!
//! Elastic Load Balancing writes access logs as one of two principals, depending on the region
//! (AWS, "Enable access logs for your Application Load Balancer", step 2): in the regions that
//! existed before August 2022 it is the region's Elastic Load Balancing account
//! ([`ELB_ACCOUNTS`]), in every newer region it is the service principal
//! [`LOG_DELIVERY_SERVICE`].

use serde_json::{Value, json};

/// The log-delivery service principal of the regions opened from August 2022 on.
pub const LOG_DELIVERY_SERVICE: &str = "logdelivery.elasticloadbalancing.amazonaws.com";

/// The Elastic Load Balancing account of each region that has one, as AWS documents it for
/// access-log bucket policies. Every other region uses [`LOG_DELIVERY_SERVICE`].
pub const ELB_ACCOUNTS: &[(&str, &str)] = &[
    ("us-east-1", "127311923021"),
    ("us-east-2", "033677994240"),
    ("us-west-1", "027434742980"),
    ("us-west-2", "797873946194"),
    ("af-south-1", "098369216593"),
    ("ap-east-1", "754344448648"),
    ("ap-southeast-3", "589379963580"),
    ("ap-south-1", "718504428378"),
    ("ap-northeast-3", "383597477331"),
    ("ap-northeast-2", "600734575887"),
    ("ap-southeast-1", "114774131450"),
    ("ap-southeast-2", "783225319266"),
    ("ap-northeast-1", "582318560864"),
    ("ca-central-1", "985666609251"),
    ("eu-central-1", "054676820928"),
    ("eu-west-1", "156460612806"),
    ("eu-west-2", "652711504416"),
    ("eu-south-1", "635631232127"),
    ("eu-west-3", "009996457667"),
    ("eu-north-1", "897822967062"),
    ("me-south-1", "076674570225"),
    ("sa-east-1", "507241528517"),
    ("us-gov-west-1", "048591011584"),
    ("us-gov-east-1", "190560391635"),
];

/// Who writes a region's access logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDeliveryPrincipal {
    /// The region's Elastic Load Balancing account (older regions).
    Account {
        /// The 12-digit account id.
        account_id: &'static str,
        /// Its root ARN in the region's partition, as the policy names it.
        arn: String,
    },
    /// The service principal [`LOG_DELIVERY_SERVICE`] (regions opened from August 2022 on).
    Service,
}

impl LogDeliveryPrincipal {
    /// The principal for `region`.
    pub fn for_region(region: &str) -> Self {
        match ELB_ACCOUNTS.iter().find(|(r, _)| *r == region) {
            Some((_, account_id)) => LogDeliveryPrincipal::Account {
                account_id,
                arn: format!("arn:{}:iam::{account_id}:root", partition(region)),
            },
            None => LogDeliveryPrincipal::Service,
        }
    }

    /// The policy's `Principal` element.
    pub fn to_json(&self) -> Value {
        match self {
            LogDeliveryPrincipal::Account { arn, .. } => json!({ "AWS": arn }),
            LogDeliveryPrincipal::Service => json!({ "Service": LOG_DELIVERY_SERVICE }),
        }
    }
}

/// The ARN partition of `region`.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("cn-") {
        "aws-cn"
    } else {
        "aws"
    }
}

/// The key prefix the load balancer writes under: `{prefix}/AWSLogs/{account}/` (or
/// `AWSLogs/{account}/` without a prefix).
pub fn log_key_prefix(prefix: &str, account_id: &str) -> String {
    if prefix.is_empty() {
        format!("AWSLogs/{account_id}/")
    } else {
        format!("{prefix}/AWSLogs/{account_id}/")
    }
}

/// The access-log bucket's policy: deny every request that does not use TLS, and let the
/// region's log-delivery principal put objects under the log prefix of `account_id`.
pub fn bucket_policy(bucket: &str, prefix: &str, account_id: &str, region: &str) -> Value {
    let arn = format!("arn:{}:s3:::{bucket}", partition(region));
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn.clone(), format!("{arn}/*")],
                "Condition": { "Bool": { "aws:SecureTransport": "false" } }
            },
            {
                "Sid": "AllowLoadBalancerLogDelivery",
                "Effect": "Allow",
                "Principal": LogDeliveryPrincipal::for_region(region).to_json(),
                "Action": "s3:PutObject",
                "Resource": format!("{arn}/{}*", log_key_prefix(prefix, account_id))
            }
        ]
    })
}

/// The repository's lifecycle policy: expire all but the newest `keep` images.
pub fn repository_lifecycle_policy(keep: u32) -> Value {
    json!({
        "rules": [{
            "rulePriority": 1,
            "description": format!("keep the newest {keep} images"),
            "selection": {
                "tagStatus": "any",
                "countType": "imageCountMoreThan",
                "countNumber": keep
            },
            "action": { "type": "expire" }
        }]
    })
}

/// True when two IAM-style policy documents say the same: object key order, the order of
/// list items, and a one-item list versus its item do not matter (AWS may return any of these
/// forms for what was written).
pub fn same_policy(a: &Value, b: &Value) -> bool {
    normalize(a) == normalize(b)
}

fn normalize(v: &Value) -> Value {
    match v {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(normalize).collect();
            if items.len() == 1 {
                return items.remove(0);
            }
            items.sort_by_key(|i| i.to_string());
            Value::Array(items)
        }
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_region_gets_its_account_and_the_rest_the_service() {
        assert_eq!(ELB_ACCOUNTS.len(), 24);
        for (region, account) in ELB_ACCOUNTS {
            let p = LogDeliveryPrincipal::for_region(region);
            let LogDeliveryPrincipal::Account { account_id, arn } = &p else {
                panic!("{region}: {p:?}");
            };
            assert_eq!(account_id, account);
            assert!(arn.ends_with(&format!("::{account}:root")), "{arn}");
            assert_eq!(p.to_json(), json!({ "AWS": arn }));
        }
        assert_eq!(
            LogDeliveryPrincipal::for_region("eu-west-1"),
            LogDeliveryPrincipal::Account {
                account_id: "156460612806",
                arn: "arn:aws:iam::156460612806:root".to_owned()
            }
        );
        assert_eq!(
            LogDeliveryPrincipal::for_region("us-gov-west-1").to_json(),
            json!({ "AWS": "arn:aws-us-gov:iam::048591011584:root" })
        );
        // Regions opened from August 2022 on have no ELB account: the service principal.
        for newer in [
            "ap-south-2",
            "ap-southeast-4",
            "ap-southeast-5",
            "eu-south-2",
            "eu-central-2",
            "me-central-1",
            "il-central-1",
            "ca-west-1",
            "mx-central-1",
        ] {
            assert_eq!(
                LogDeliveryPrincipal::for_region(newer).to_json(),
                json!({ "Service": "logdelivery.elasticloadbalancing.amazonaws.com" }),
                "{newer}"
            );
        }
        // No duplicates in the table.
        let mut regions: Vec<&str> = ELB_ACCOUNTS.iter().map(|(r, _)| *r).collect();
        regions.sort_unstable();
        regions.dedup();
        assert_eq!(regions.len(), ELB_ACCOUNTS.len());
    }

    #[test]
    fn bucket_policy_denies_plain_http_and_lets_only_the_region_principal_write_logs() {
        let p = bucket_policy("b", "alb", "111122223333", "eu-west-1");
        let statements = p["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 2);
        let deny = &statements[0];
        assert_eq!(deny["Effect"], "Deny");
        assert_eq!(deny["Principal"], "*");
        assert_eq!(deny["Action"], "s3:*");
        assert_eq!(
            deny["Condition"],
            json!({ "Bool": { "aws:SecureTransport": "false" } })
        );
        assert_eq!(
            deny["Resource"],
            json!(["arn:aws:s3:::b", "arn:aws:s3:::b/*"])
        );
        let allow = &statements[1];
        assert_eq!(allow["Effect"], "Allow");
        assert_eq!(
            allow["Principal"],
            json!({ "AWS": "arn:aws:iam::156460612806:root" })
        );
        assert_eq!(allow["Action"], "s3:PutObject");
        assert_eq!(
            allow["Resource"],
            "arn:aws:s3:::b/alb/AWSLogs/111122223333/*"
        );

        let newer = bucket_policy("b", "", "111122223333", "eu-central-2");
        assert_eq!(
            newer["Statement"][1]["Principal"],
            json!({ "Service": LOG_DELIVERY_SERVICE })
        );
        assert_eq!(
            newer["Statement"][1]["Resource"],
            "arn:aws:s3:::b/AWSLogs/111122223333/*"
        );
        let gov = bucket_policy("b", "x/y", "111122223333", "us-gov-east-1");
        assert_eq!(
            gov["Statement"][1]["Resource"],
            "arn:aws-us-gov:s3:::b/x/y/AWSLogs/111122223333/*"
        );
    }

    #[test]
    fn policies_compare_by_meaning_not_by_form() {
        let p = bucket_policy("b", "alb", "111122223333", "eu-west-1");
        let mut reordered = p.clone();
        let statements = reordered["Statement"].as_array_mut().unwrap();
        statements.reverse();
        statements[1]["Resource"] = json!(["arn:aws:s3:::b/*", "arn:aws:s3:::b"]);
        statements[0]["Action"] = json!(["s3:PutObject"]);
        assert!(same_policy(&p, &reordered));
        let mut changed = p.clone();
        changed["Statement"][1]["Principal"] = json!({ "AWS": "*" });
        assert!(!same_policy(&p, &changed));
        let text = serde_json::to_string(&p).unwrap();
        assert!(same_policy(&p, &serde_json::from_str(&text).unwrap()));
    }

    #[test]
    fn lifecycle_policy_keeps_the_newest_images() {
        let p = repository_lifecycle_policy(30);
        assert_eq!(p["rules"][0]["selection"]["countNumber"], 30);
        assert_eq!(
            p["rules"][0]["selection"]["countType"],
            "imageCountMoreThan"
        );
        assert_eq!(p["rules"][0]["action"]["type"], "expire");
    }
}
