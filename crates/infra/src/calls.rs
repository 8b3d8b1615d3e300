//! Counting AWS calls with an SDK interceptor.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::Serialize;

/// Counts calls per service and operation. Clones share one count. Each SDK operation counts
/// once, however many times the SDK retried it.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<(String, String), u64>>>,
}

/// A snapshot of a [`CallCounter`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    /// Calls per `(service, operation)`.
    pub by_operation: BTreeMap<(String, String), u64>,
}

impl CallCounter {
    /// The counts so far.
    pub fn snapshot(&self) -> CallCounts {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        CallCounts {
            by_operation: counts.clone(),
        }
    }

    /// Forgets every count.
    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl CallCounts {
    /// All calls.
    pub fn total(&self) -> u64 {
        self.by_operation.values().sum()
    }

    /// Calls whose operation name does not start with a read verb (Describe, Get, List).
    pub fn writes(&self) -> u64 {
        self.by_operation
            .iter()
            .filter(|((_, op), _)| !is_read(op))
            .map(|(_, n)| n)
            .sum()
    }

    /// The calls made since `earlier` was taken.
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        let by_operation = self
            .by_operation
            .iter()
            .filter_map(|(key, n)| {
                let before = earlier.by_operation.get(key).copied().unwrap_or(0);
                (n > &before).then(|| (key.clone(), n - before))
            })
            .collect();
        CallCounts { by_operation }
    }
}

fn is_read(operation: &str) -> bool {
    ["Describe", "Get", "List"]
        .iter()
        .any(|verb| operation.starts_with(verb))
}

impl fmt::Display for CallCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} AWS calls ({} writes)", self.total(), self.writes())?;
        for ((service, op), n) in &self.by_operation {
            writeln!(f, "  {n:>4}  {service} {op}")?;
        }
        Ok(())
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "stackproof-call-counter"
    }

    // Once per operation, after its runtime plugins put the operation's Metadata in the bag
    // (it is not there yet in `read_before_execution`).
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = match cfg.load::<Metadata>() {
            Some(m) => (m.service().to_owned(), m.name().to_owned()),
            None => ("unknown".to_owned(), "unknown".to_owned()),
        };
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.entry((service, operation)).or_default() += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(items: &[(&str, u64)]) -> CallCounts {
        CallCounts {
            by_operation: items
                .iter()
                .map(|(op, n)| (("ec2".to_owned(), (*op).to_owned()), *n))
                .collect(),
        }
    }

    #[test]
    fn totals_writes_and_differences() {
        let before = counts(&[("DescribeVpcs", 1)]);
        let after = counts(&[
            ("DescribeVpcs", 3),
            ("CreateVpc", 1),
            ("GetConsoleOutput", 1),
        ]);
        assert_eq!(after.total(), 5);
        assert_eq!(after.writes(), 1);
        let diff = after.since(&before);
        assert_eq!(diff.total(), 4);
        assert_eq!(
            diff.by_operation[&("ec2".to_owned(), "DescribeVpcs".to_owned())],
            2
        );
        assert!(diff.to_string().starts_with("4 AWS calls (1 writes)"));
    }
}
