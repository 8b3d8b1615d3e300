//! The commented example `stack.toml` that `cargo xtask init` writes.

/// A complete, commented `stack.toml`: every key of every section with its default value (keys
/// without a default value commented out, with an example) and a line saying what it means and
/// what is allowed. Parsed as it is, it gives exactly [`crate::StackConfig::default`]; the tests
/// hold it to every key the configuration accepts.
pub fn example_toml() -> &'static str {
    include_str!("example.toml")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::StackConfig;

    /// A line of the example that sets a key once its `#` is removed (`# log-bucket = "..."`).
    fn commented_key(line: &str) -> Option<&str> {
        let rest = line.strip_prefix("# ")?;
        let (key, _) = rest.split_once(" = ")?;
        key.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            .then_some(rest)
    }

    /// A commented-out table header (`# [database]`, a table that is off unless written).
    fn commented_header(line: &str) -> Option<&str> {
        let rest = line.strip_prefix("# ")?;
        let name = rest.strip_prefix('[')?.strip_suffix(']')?;
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            .then_some(rest)
    }

    /// The example with every commented-out key and table set.
    fn uncommented() -> String {
        example_toml()
            .lines()
            .map(|line| {
                commented_header(line)
                    .or_else(|| commented_key(line))
                    .unwrap_or(line)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The keys the configuration accepts in the table at `path` (`""` for the top level), as
    /// the parser itself lists them when it meets an unknown key; `None` when `path` is not a
    /// table with fixed keys (a value, or a free-form map such as `tags`).
    fn accepted_keys(path: &str) -> Option<Vec<String>> {
        let header = if path.is_empty() {
            String::new()
        } else {
            format!("[{path}]\n")
        };
        let err = StackConfig::from_toml(&format!("{header}zz-probe = 1\n"), "probe")
            .err()?
            .to_string();
        let (_, list) = err.split_once("unknown field `zz-probe`, expected one of ")?;
        let list = list.lines().next()?;
        Some(
            list.split(", ")
                .map(|k| k.trim_matches('`').to_owned())
                .collect(),
        )
    }

    /// Every `(table, key)` the configuration accepts, found by walking the tables.
    fn every_key() -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut tables = vec![String::new()];
        while let Some(table) = tables.pop() {
            for key in accepted_keys(&table).unwrap_or_default() {
                let path = if table.is_empty() {
                    key.clone()
                } else {
                    format!("{table}.{key}")
                };
                if accepted_keys(&path).is_some() {
                    tables.push(path);
                } else {
                    out.push((table.clone(), key));
                }
            }
        }
        out
    }

    /// `(table, key)` of every key the example sets or shows commented out, and every table
    /// header as a key of its parent.
    fn keys_in_example() -> BTreeSet<(String, String)> {
        let mut found = BTreeSet::new();
        let mut table = String::new();
        for line in example_toml().lines() {
            let line = commented_header(line).unwrap_or(line);
            if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = header.to_owned();
                let (parent, key) = header.rsplit_once('.').unwrap_or(("", header));
                found.insert((parent.to_owned(), key.to_owned()));
            } else if let Some((key, _)) = commented_key(line)
                .unwrap_or(line)
                .split_once(" = ")
                .filter(|(k, _)| !k.starts_with('#'))
            {
                found.insert((table.clone(), key.to_owned()));
            }
        }
        found
    }

    #[test]
    fn the_example_is_exactly_the_defaults() {
        let config = StackConfig::from_toml(example_toml(), "stack.toml").unwrap();
        assert_eq!(config, StackConfig::default());
        let stack = config.validate().unwrap();
        let default = StackConfig::default().validate().unwrap();
        assert_eq!(format!("{stack:?}"), format!("{default:?}"));
    }

    #[test]
    fn the_example_shows_every_key_the_configuration_accepts() {
        let accepted = every_key();
        // The walk found the nested tables too (a broken walk would pass trivially).
        assert!(accepted.len() > 50, "{accepted:?}");
        assert!(accepted.contains(&(
            "load-balancer.health-check".to_owned(),
            "matcher".to_owned()
        )));
        let shown = keys_in_example();
        let missing: Vec<String> = accepted
            .iter()
            .filter(|k| !shown.contains(*k))
            .map(|(table, key)| format!("[{table}] {key}"))
            .collect();
        assert!(missing.is_empty(), "not in example.toml: {missing:?}");
    }

    #[test]
    fn the_commented_out_keys_are_valid_when_set() {
        let text = uncommented();
        let config = StackConfig::from_toml(&text, "stack.toml").unwrap();
        assert!(config.storage.log_bucket.is_some());
        assert!(config.network.availability_zones.is_some());
        assert!(config.load_balancer.certificate_arn.is_some());
        assert!(config.service.image.is_some());
        assert!(config.observability.alarm_email.is_some());
        assert!(config.database.is_some());
        assert!(config.cache.is_some());
        assert_eq!(config.tags.get("team").map(String::as_str), Some("web"));
        if let Err(problems) = config.validate() {
            panic!("{problems}");
        }
    }

    #[test]
    fn every_key_and_table_has_a_comment_line_above_it() {
        let lines: Vec<&str> = example_toml().lines().collect();
        for (i, line) in lines.iter().enumerate().skip(1) {
            if line.starts_with('[') || (!line.starts_with('#') && line.contains(" = ")) {
                assert!(
                    lines[i - 1].starts_with("# "),
                    "no comment above line {}: {line}",
                    i + 1
                );
            }
        }
    }
}
