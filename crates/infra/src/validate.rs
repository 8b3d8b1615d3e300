//! Configuration problems: every one names the field, the value and what is allowed, and all of
//! them are reported together, before any AWS call.

use std::fmt;

/// One rejected configuration value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, as written in the configuration file (`network.vpc-cidr`).
    pub field: String,
    /// The rejected value, as the user wrote it.
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}: {}", self.field, self.value, self.allowed)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Records a problem.
    pub fn add(
        &mut self,
        field: impl Into<String>,
        value: impl fmt::Display,
        allowed: impl Into<String>,
    ) {
        self.0.push(Problem {
            field: field.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        });
    }

    /// Adds every problem of `other`.
    pub fn merge(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// `Ok(value)` when no problem was recorded, else the problems.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// The same problems with every field named inside `table` (`vpc-cidr` becomes
    /// `network.vpc-cidr`): a module names its fields as its own configuration does, and the
    /// program that reads them from a file says where they are in it.
    pub fn within(mut self, table: &str) -> Problems {
        for p in &mut self.0 {
            p.field = format!("{table}.{}", p.field);
        }
        self
    }

    /// True when a problem names `field`.
    pub fn mentions(&self, field: &str) -> bool {
        self.0.iter().any(|p| p.field == field)
    }
}

/// What checking a module's configuration needs beyond the configuration itself: the stack it
/// belongs to (names are derived from it) and the region it will be built in (zones, service
/// principals and limits differ by region).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope<'a> {
    stack: &'a str,
    region: &'a str,
}

impl<'a> Scope<'a> {
    /// The scope of stack `stack` in `region`.
    pub fn new(stack: &'a str, region: &'a str) -> Scope<'a> {
        Scope { stack, region }
    }

    /// The stack's name.
    pub fn stack(&self) -> &'a str {
        self.stack
    }

    /// The region.
    pub fn region(&self) -> &'a str {
        self.region
    }
}

/// The one shape of a module's configuration: the settings as read (serde, with defaults),
/// checked as a whole into the module's spec, which only this check builds (its fields are
/// private, so nothing reaches AWS unchecked). Every problem is reported, not the first, each
/// naming its field as the configuration does (`vpc-cidr`); a caller that reads the
/// configuration from a file adds where with [`Problems::within`].
pub trait Config {
    /// The checked configuration the module is built from.
    type Spec;

    /// Checks the whole configuration for `scope`.
    fn validate(&self, scope: &Scope<'_>) -> Result<Self::Spec, Problems>;
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} configuration problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_problem() {
        let mut p = Problems::default();
        assert_eq!(p.clone().into_result(1), Ok(1));
        p.add(
            "network.vpc-cidr",
            "\"10.0.0.0/33\"",
            "an IPv4 CIDR with a prefix from /16 to /28",
        );
        p.add("network.az-count", 9, "1 to 3 in eu-west-1");
        assert!(p.mentions("network.az-count"));
        let inside = Problems(vec![Problem {
            field: "vpc-cidr".into(),
            value: "x".into(),
            allowed: "y".into(),
        }])
        .within("network");
        assert!(inside.mentions("network.vpc-cidr"), "{inside}");
        assert_eq!(
            p.to_string(),
            "2 configuration problems:\n  - network.vpc-cidr = \"10.0.0.0/33\": an IPv4 CIDR with a prefix from /16 to /28\n  - network.az-count = 9: 1 to 3 in eu-west-1"
        );
    }
}
