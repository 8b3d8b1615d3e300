//! Unit tests of the load balancer module: validation lives in config.rs; here the diff.
