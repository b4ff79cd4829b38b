//! The one state vocabulary of every report, text and JSON alike (`docs/json.md`): the same
//! word always means the same thing, whichever command prints it.
//!
//! - [`PublishState`], what a run did to a device's archive (or, for `ovl diff` and
//!   `ovl build --dry-run`, would do): `created`, `updated`, `unchanged`, `removed`, `failed`.
//!   Printed by `build`, `watch`, `diff`, `device` and `prune`.
//! - [`ArchiveState`], how a published archive stands against the site now: `built`, `stale`,
//!   `missing`, `orphan`, `failed`. Printed by `list` and `show`.

use serde::Serialize;

use crate::build::publish::Published;

/// What a run did (or, dry, would do) to one device's archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishState {
    /// There was no archive; one was (would be) published.
    Created,
    /// The archive was (would be) replaced with different bytes.
    Updated,
    /// The archive already held exactly these bytes and was (would be) left alone.
    Unchanged,
    /// The archive was (would be) deleted.
    Removed,
    /// The device could not be built; its archive, if any, was left as it was.
    Failed,
}

impl PublishState {
    /// Every state, in report order.
    pub const ALL: [PublishState; 5] = [
        PublishState::Created,
        PublishState::Updated,
        PublishState::Unchanged,
        PublishState::Removed,
        PublishState::Failed,
    ];

    /// `created`, `updated`, `unchanged`, `removed` or `failed`.
    pub fn name(self) -> &'static str {
        match self {
            PublishState::Created => "created",
            PublishState::Updated => "updated",
            PublishState::Unchanged => "unchanged",
            PublishState::Removed => "removed",
            PublishState::Failed => "failed",
        }
    }

    /// Created or updated: the bytes a device gets change.
    pub fn is_change(self) -> bool {
        matches!(self, PublishState::Created | PublishState::Updated)
    }
}

impl From<Published> for PublishState {
    fn from(p: Published) -> PublishState {
        match p {
            Published::Created => PublishState::Created,
            Published::Updated => PublishState::Updated,
            Published::Unchanged => PublishState::Unchanged,
        }
    }
}

/// How a device's published archive stands against what a build would write now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveState {
    /// The published archive holds exactly what a build would write.
    Built,
    /// The published archive differs from what a build would write (or cannot be read).
    Stale,
    /// No archive is published.
    Missing,
    /// An archive is published for a MAC the inventory does not hold (`ovl prune` removes it).
    Orphan,
    /// The device cannot be planned now (its archive, if any, is the last good one).
    Failed,
}

impl ArchiveState {
    /// `built`, `stale`, `missing`, `orphan` or `failed`.
    pub fn name(self) -> &'static str {
        match self {
            ArchiveState::Built => "built",
            ArchiveState::Stale => "stale",
            ArchiveState::Missing => "missing",
            ArchiveState::Orphan => "orphan",
            ArchiveState::Failed => "failed",
        }
    }
}

/// Counts of states, in the order of `order`, as `2 created, 3 unchanged` (zero counts left
/// out; `none` when everything is zero).
pub(crate) fn counts_text<T: Copy + Eq>(
    states: impl IntoIterator<Item = T>,
    order: &[T],
    name: impl Fn(T) -> &'static str,
) -> String {
    let states: Vec<T> = states.into_iter().collect();
    let parts: Vec<String> = order
        .iter()
        .filter_map(|s| {
            let n = states.iter().filter(|x| *x == s).count();
            (n > 0).then(|| format!("{n} {}", name(*s)))
        })
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_json_words() {
        for s in PublishState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
        for s in [
            ArchiveState::Built,
            ArchiveState::Stale,
            ArchiveState::Missing,
            ArchiveState::Orphan,
            ArchiveState::Failed,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }

    #[test]
    fn counts_read_in_order() {
        use PublishState::*;
        let t = counts_text([Unchanged, Created, Unchanged], &PublishState::ALL, |s| {
            s.name()
        });
        assert_eq!(t, "1 created, 2 unchanged");
        assert_eq!(counts_text([], &PublishState::ALL, |s| s.name()), "none");
    }
}
