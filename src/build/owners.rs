//! User and group names ↔ numeric ids, as Alpine's `alpine-baselayout` defines them, extended
//! by the `etc/passwd` and `etc/group` a device's own layers carry.

use std::collections::BTreeMap;
use std::sync::OnceLock;

const ALPINE_USERS: &[(&str, u32)] = &[
    ("root", 0),
    ("bin", 1),
    ("daemon", 2),
    ("adm", 3),
    ("lp", 4),
    ("sync", 5),
    ("shutdown", 6),
    ("halt", 7),
    ("mail", 8),
    ("news", 9),
    ("uucp", 10),
    ("operator", 11),
    ("man", 13),
    ("postmaster", 14),
    ("cron", 16),
    ("ftp", 21),
    ("sshd", 22),
    ("at", 25),
    ("squid", 31),
    ("xfs", 33),
    ("games", 35),
    ("cyrus", 85),
    ("vpopmail", 89),
    ("ntp", 123),
    ("smmsp", 209),
    ("guest", 405),
    ("nobody", 65534),
];

const ALPINE_GROUPS: &[(&str, u32)] = &[
    ("root", 0),
    ("bin", 1),
    ("daemon", 2),
    ("sys", 3),
    ("adm", 4),
    ("tty", 5),
    ("disk", 6),
    ("lp", 7),
    ("mem", 8),
    ("kmem", 9),
    ("wheel", 10),
    ("floppy", 11),
    ("mail", 12),
    ("news", 13),
    ("uucp", 14),
    ("man", 15),
    ("cron", 16),
    ("console", 17),
    ("audio", 18),
    ("cdrom", 19),
    ("dialout", 20),
    ("ftp", 21),
    ("sshd", 22),
    ("input", 23),
    ("at", 25),
    ("tape", 26),
    ("video", 27),
    ("netdev", 28),
    ("readproc", 30),
    ("squid", 31),
    ("xfs", 33),
    ("kvm", 34),
    ("games", 35),
    ("shadow", 42),
    ("cdrw", 80),
    ("www-data", 82),
    ("usb", 85),
    ("vpopmail", 89),
    ("users", 100),
    ("ntp", 123),
    ("nofiles", 200),
    ("smmsp", 209),
    ("locate", 245),
    ("abuild", 300),
    ("utmp", 406),
    ("ping", 999),
    ("nogroup", 65533),
    ("nobody", 65534),
];

/// The `shadow` group's gid on Alpine.
pub(crate) const SHADOW_GID: u32 = 42;

/// One namespace of names (users or groups): Alpine's base set, extended by a device's own
/// file. The base tables are built once per process; a device only holds its own entries.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    base: &'static Table,
    by_name: BTreeMap<String, u32>,
    by_id: BTreeMap<u32, String>,
}

/// A name table both ways.
#[derive(Debug, Default)]
pub(crate) struct Table {
    by_name: BTreeMap<&'static str, u32>,
    by_id: BTreeMap<u32, &'static str>,
}

impl Table {
    fn new(base: &'static [(&'static str, u32)]) -> Table {
        let mut t = Table::default();
        for (name, id) in base {
            t.by_name.insert(name, *id);
            t.by_id.insert(*id, name);
        }
        t
    }
}

impl Names {
    fn new(base: &'static Table) -> Self {
        Names {
            base,
            by_name: BTreeMap::new(),
            by_id: BTreeMap::new(),
        }
    }

    fn insert(&mut self, name: &str, id: u32) {
        self.by_name.insert(name.to_string(), id);
        self.by_id.insert(id, name.to_string());
    }

    /// Read `name:x:id:…` lines (passwd or group format); malformed lines are skipped.
    fn extend_from(&mut self, text: &str) {
        for line in text.lines() {
            let mut f = line.split(':');
            if let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next())
                && let Ok(id) = id.trim().parse::<u32>()
                && !name.is_empty()
            {
                self.insert(name, id);
            }
        }
    }

    /// The id of `name`.
    pub(crate) fn id(&self, name: &str) -> Option<u32> {
        self.by_name
            .get(name)
            .or_else(|| self.base.by_name.get(name))
            .copied()
    }

    /// The name of `id`, or an empty string when it has none (tar then keeps the number).
    pub(crate) fn name(&self, id: u32) -> String {
        match self.by_id.get(&id) {
            Some(n) => n.clone(),
            None => self
                .base
                .by_id
                .get(&id)
                .map(|n| n.to_string())
                .unwrap_or_default(),
        }
    }
}

/// Users and groups for one device.
#[derive(Debug, Clone)]
pub(crate) struct Ids {
    /// Users.
    pub(crate) users: Names,
    /// Groups.
    pub(crate) groups: Names,
}

impl Ids {
    /// Alpine's defaults, extended by the device's own `etc/passwd` and `etc/group` if any.
    pub(crate) fn new(passwd: Option<&str>, group: Option<&str>) -> Ids {
        static USERS: OnceLock<Table> = OnceLock::new();
        static GROUPS: OnceLock<Table> = OnceLock::new();
        let mut users = Names::new(USERS.get_or_init(|| Table::new(ALPINE_USERS)));
        let mut groups = Names::new(GROUPS.get_or_init(|| Table::new(ALPINE_GROUPS)));
        if let Some(p) = passwd {
            users.extend_from(p);
        }
        if let Some(g) = group {
            groups.extend_from(g);
        }
        Ids { users, groups }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_files_extend_defaults() {
        let ids = Ids::new(
            Some("kiosk:x:1000:1000::/home/kiosk:/bin/sh\nbad line\n"),
            Some("kiosk:x:1000:\n"),
        );
        assert_eq!(ids.users.id("kiosk"), Some(1000));
        assert_eq!(ids.groups.id("shadow"), Some(SHADOW_GID));
        assert_eq!(ids.users.name(0), "root");
        assert_eq!(ids.users.name(4242), "");
    }
}
