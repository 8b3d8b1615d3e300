//! An open-loop HTTP load generator: coordinated-omission-corrected latency, per-AZ breakdowns, SLO verdicts.
