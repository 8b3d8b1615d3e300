//! Whether a subnet's network ACL lets traffic through: entries of one direction are evaluated
//! in rule-number order for TCP on a port to or from anywhere (0.0.0.0/0); the first matching
//! entry decides and no match denies, as in AWS. A deny-all ACL (what AWS FIS and
//! `network::isolate_zone` use) therefore cuts the subnet off: a load balancer cannot reach its
//! tasks, clients cannot reach its load balancer node, and a task launched there cannot pull its
//! image.

use aws_sdk_ec2::types::{NetworkAcl, NetworkAclEntry, RuleAction};

/// Whether `acl` admits TCP to `port` from any source.
pub(crate) fn admits_tcp(acl: &NetworkAcl, port: u16) -> bool {
    admits(acl, false, port)
}

/// Whether a task behind `acl` can pull an image: HTTPS out to anywhere, and the answers back in
/// (on an ephemeral port; 32768 stands for them).
pub(crate) fn admits_pull(acl: &NetworkAcl) -> bool {
    admits(acl, true, 443) && admits(acl, false, 32768)
}

/// Whether `acl` lets TCP on `port` through in one direction (`egress`: out to anywhere).
fn admits(acl: &NetworkAcl, egress: bool, port: u16) -> bool {
    let mut entries: Vec<&NetworkAclEntry> = acl
        .entries()
        .iter()
        .filter(|e| e.egress() == Some(egress))
        .filter(|e| e.cidr_block().is_some())
        .collect();
    entries.sort_by_key(|e| e.rule_number().unwrap_or(i32::MAX));
    for e in entries {
        if !covers_everything(e.cidr_block().unwrap_or_default()) {
            continue;
        }
        let proto = e.protocol().unwrap_or("-1");
        if !matches!(proto, "-1" | "6" | "tcp" | "all") {
            continue;
        }
        if let Some(range) = e.port_range() {
            let from = range.from().unwrap_or(0);
            let to = range.to().unwrap_or(65535);
            if i32::from(port) < from || i32::from(port) > to {
                continue;
            }
        }
        return e.rule_action() == Some(&RuleAction::Allow);
    }
    false
}

/// An entry for `0.0.0.0/0` matches traffic from every source.
fn covers_everything(cidr: &str) -> bool {
    cidr.ends_with("/0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::PortRange;

    fn entry(
        n: i32,
        action: RuleAction,
        proto: &str,
        ports: Option<(i32, i32)>,
    ) -> NetworkAclEntry {
        let mut b = NetworkAclEntry::builder()
            .rule_number(n)
            .rule_action(action)
            .protocol(proto)
            .egress(false)
            .cidr_block("0.0.0.0/0");
        if let Some((from, to)) = ports {
            b = b.port_range(PortRange::builder().from(from).to(to).build());
        }
        b.build()
    }

    fn acl(entries: Vec<NetworkAclEntry>) -> NetworkAcl {
        NetworkAcl::builder().set_entries(Some(entries)).build()
    }

    #[test]
    fn default_acl_admits_and_deny_all_does_not() {
        let default = acl(vec![
            entry(100, RuleAction::Allow, "-1", None),
            entry(32767, RuleAction::Deny, "-1", None),
        ]);
        assert!(admits_tcp(&default, 8080));
        assert!(!admits_tcp(
            &acl(vec![entry(32767, RuleAction::Deny, "-1", None)]),
            8080
        ));
        assert!(!admits_tcp(&acl(vec![]), 8080), "no entry: implicit deny");
        let outbound = NetworkAclEntry::builder()
            .rule_number(100)
            .rule_action(RuleAction::Allow)
            .protocol("-1")
            .egress(true)
            .cidr_block("0.0.0.0/0")
            .build();
        let both = acl(vec![entry(100, RuleAction::Allow, "-1", None), outbound]);
        assert!(admits_pull(&both));
        assert!(!admits_pull(&default), "no egress entry");
        assert!(!admits_pull(&acl(vec![])));
    }

    #[test]
    fn first_match_in_rule_order_decides() {
        let a = acl(vec![
            entry(200, RuleAction::Allow, "-1", None),
            entry(100, RuleAction::Deny, "6", Some((8000, 8100))),
        ]);
        assert!(!admits_tcp(&a, 8080));
        assert!(admits_tcp(&a, 9000));
        let udp_only = acl(vec![entry(100, RuleAction::Allow, "17", None)]);
        assert!(!admits_tcp(&udp_only, 8080));
    }
}
