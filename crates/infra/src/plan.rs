//! Plans: what a module would change, printable Terraform-style and as JSON.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What happens to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// It is created.
    Create,
    /// It exists and is changed in place.
    Update,
    /// It is deleted.
    Delete,
    /// It exists and is deliberately left as it is (a destroy that keeps data, such as a log
    /// group that holds logs). Not a change: a plan of only these is empty.
    Keep,
}

impl Action {
    /// The plan's sign of the action: `+` create, `~` update, `-` delete.
    pub fn symbol(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
            Action::Keep => '=',
        }
    }
    fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Keep => "keep",
        }
    }
}

/// One change to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// What happens.
    pub action: Action,
    /// The module that owns the resource.
    pub module: String,
    /// The kind of resource (`vpc`, `subnet`, `route`, ...).
    pub kind: String,
    /// The resource's logical name (its `stackproof:name` tag).
    pub name: String,
    /// The AWS id, when the resource exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What exactly changes, one line each (`cidr 10.0.0.0/16`, `enable-dns-hostnames false -> true`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub details: Vec<String>,
    /// The settings the change moves, as data: what callers decide on (each is also one line
    /// of `details`, which is for people).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub fields: Vec<FieldChange>,
}

/// One setting of a resource moved from one value to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The setting, as AWS names it (`deletion_protection.enabled`, `health-check-path`).
    pub field: String,
    /// Its value now; none when it is not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The value the change gives it.
    pub to: String,
}

impl Change {
    /// A change with no id and no details.
    pub fn new(action: Action, module: &str, kind: &str, name: &str) -> Self {
        Self {
            action,
            module: module.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            id: None,
            details: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Records that `field` moves from `from` (none: unset) to `to`, and shows it as a detail
    /// line (`field from -> to`).
    pub fn field(
        mut self,
        field: impl Into<String>,
        from: Option<impl Into<String>>,
        to: impl Into<String>,
    ) -> Self {
        let change = FieldChange {
            field: field.into(),
            from: from.map(Into::into),
            to: to.into(),
        };
        self.details.push(format!(
            "{} {} -> {}",
            change.field,
            change.from.as_deref().unwrap_or("(unset)"),
            change.to
        ));
        self.fields.push(change);
        self
    }

    /// True when the change sets `field` to `to`.
    pub fn sets(&self, field: &str, to: &str) -> bool {
        self.fields.iter().any(|f| f.field == field && f.to == to)
    }

    /// Sets the AWS id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Adds a detail line.
    pub fn detail(mut self, line: impl Into<String>) -> Self {
        self.details.push(line.into());
        self
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {:?}",
            self.action.symbol(),
            self.action.verb(),
            self.module,
            self.kind,
            self.name
        )?;
        if let Some(id) = &self.id {
            write!(f, " ({id})")?;
        }
        for line in &self.details {
            write!(f, "\n      {line}")?;
        }
        Ok(())
    }
}

/// How many changes of each action a plan holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Resources to create.
    pub create: usize,
    /// Resources to update in place.
    pub update: usize,
    /// Resources to delete.
    pub delete: usize,
    /// Resources deliberately kept (not changes).
    #[serde(default)]
    pub keep: usize,
}

/// An ordered list of changes: the order is the order they are (or would be) made in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The changes.
    pub changes: Vec<Change>,
}

impl Plan {
    /// Appends a change.
    pub fn push(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// Appends every change of `other`.
    pub fn extend(&mut self, other: Plan) {
        self.changes.extend(other.changes);
    }

    /// True when nothing would change: no changes, or only resources it keeps.
    pub fn is_empty(&self) -> bool {
        self.changes.iter().all(|c| c.action == Action::Keep)
    }

    /// The resources it deliberately keeps.
    pub fn kept(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.action == Action::Keep)
    }

    /// The number of changes of each action.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for change in &self.changes {
            match change.action {
                Action::Create => counts.create += 1,
                Action::Update => counts.update += 1,
                Action::Delete => counts.delete += 1,
                Action::Keep => counts.keep += 1,
            }
        }
        counts
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return f.write_str("No changes: the stack matches its configuration.");
        }
        for change in &self.changes {
            writeln!(f, "{change}")?;
        }
        let c = self.counts();
        write!(
            f,
            "Plan: {} to create, {} to update, {} to delete",
            c.create, c.update, c.delete
        )?;
        if c.keep > 0 {
            write!(f, ", {} kept", c.keep)?;
        }
        f.write_str(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_terraform_style() {
        let mut plan = Plan::default();
        plan.push(Change::new(Action::Create, "network", "vpc", "vpc").detail("cidr 10.0.0.0/16"));
        plan.push(
            Change::new(Action::Update, "network", "security-group", "tasks")
                .id("sg-1")
                .detail("revoke tcp 22 from 0.0.0.0/0"),
        );
        plan.push(Change::new(Action::Delete, "network", "subnet", "public-a").id("subnet-1"));
        let text = plan.to_string();
        assert_eq!(
            text,
            "+ create network vpc \"vpc\"\n      cidr 10.0.0.0/16\n\
             ~ update network security-group \"tasks\" (sg-1)\n      revoke tcp 22 from 0.0.0.0/0\n\
             - delete network subnet \"public-a\" (subnet-1)\n\
             Plan: 1 to create, 1 to update, 1 to delete."
        );
        assert_eq!(
            Plan::default().to_string(),
            "No changes: the stack matches its configuration."
        );
    }

    #[test]
    fn a_plan_that_only_keeps_is_empty_and_says_what_it_keeps() {
        let mut plan = Plan::default();
        plan.push(
            Change::new(Action::Keep, "compute", "log-group", "/ecs/web").detail("it holds logs"),
        );
        assert!(plan.is_empty());
        assert_eq!(plan.kept().count(), 1);
        assert_eq!(
            plan.to_string(),
            "= keep compute log-group \"/ecs/web\"\n      it holds logs\n\
             Plan: 0 to create, 0 to update, 0 to delete, 1 kept."
        );
        plan.push(Change::new(Action::Delete, "compute", "ecs-cluster", "web"));
        assert!(!plan.is_empty());
        assert_eq!(plan.counts().keep, 1);
        assert_eq!(plan.counts().delete, 1);
    }

    #[test]
    fn json_round_trips() {
        let mut plan = Plan::default();
        plan.push(Change::new(Action::Delete, "network", "vpc", "vpc").id("vpc-1"));
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["changes"][0]["action"], "delete");
        assert_eq!(json["changes"][0]["id"], "vpc-1");
        assert!(json["changes"][0].get("details").is_none());
        let back: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(back, plan);
    }
}
