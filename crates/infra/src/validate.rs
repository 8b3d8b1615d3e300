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

    /// True when a problem names `field`.
    pub fn mentions(&self, field: &str) -> bool {
        self.0.iter().any(|p| p.field == field)
    }
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
        assert_eq!(
            p.to_string(),
            "2 configuration problems:\n  - network.vpc-cidr = \"10.0.0.0/33\": an IPv4 CIDR with a prefix from /16 to /28\n  - network.az-count = 9: 1 to 3 in eu-west-1"
        );
    }
}
