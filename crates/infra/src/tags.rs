//! The tag conventions. Tags are the source of truth: every resource that can carry tags is
//! created with them, and plan / apply / destroy find resources by them.

use std::collections::BTreeMap;

/// The stack a resource belongs to.
pub const STACK: &str = "stackproof:stack";
/// The module that owns a resource (`network`, `compute`, ...).
pub const MODULE: &str = "stackproof:module";
/// The resource's logical name inside its module (`vpc`, `public-a`, ...): its identity.
pub const NAME: &str = "stackproof:name";
/// The AWS console's display name.
pub const DISPLAY_NAME: &str = "Name";

/// The prefix reserved for stackproof's own tags; user tags may not use it.
pub const RESERVED_PREFIX: &str = "stackproof:";

/// The full set of tags for one resource: the user's tags, then the identity tags (which win).
pub fn for_resource(
    stack: &str,
    user_tags: &BTreeMap<String, String>,
    module: &str,
    name: &str,
) -> BTreeMap<String, String> {
    let mut tags = user_tags.clone();
    tags.insert(STACK.to_owned(), stack.to_owned());
    tags.insert(MODULE.to_owned(), module.to_owned());
    tags.insert(NAME.to_owned(), name.to_owned());
    tags.insert(DISPLAY_NAME.to_owned(), format!("{stack}-{name}"));
    tags
}

/// The tags in `want` that `have` lacks or holds with another value.
pub fn missing<'a>(
    want: &'a BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> BTreeMap<&'a str, &'a str> {
    want.iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_tags_win_over_user_tags() {
        let user = BTreeMap::from([
            ("team".to_owned(), "web".to_owned()),
            (NAME.to_owned(), "spoofed".to_owned()),
        ]);
        let tags = for_resource("demo", &user, "network", "vpc");
        assert_eq!(tags[NAME], "vpc");
        assert_eq!(tags[STACK], "demo");
        assert_eq!(tags["team"], "web");
        assert_eq!(tags[DISPLAY_NAME], "demo-vpc");
    }

    #[test]
    fn missing_reports_absent_and_changed_tags() {
        let want = BTreeMap::from([
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned()),
        ]);
        let have = BTreeMap::from([
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "3".to_owned()),
        ]);
        assert_eq!(missing(&want, &have), BTreeMap::from([("b", "2")]));
        assert!(missing(&want, &want).is_empty());
    }
}
