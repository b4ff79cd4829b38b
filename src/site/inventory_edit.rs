//! Editing the inventory (`devices.toml`) from scripts — `ovl device add|set|rm` — with a
//! format-preserving TOML editor: comments, order, spacing and spelling of every other entry
//! stay byte for byte; only the edited `[[device]]` entry changes. Checking the result is the
//! caller's job ([`Inventory::parse`](crate::site::inventory::Inventory::parse)).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, TableLike, Value};

use crate::error::{Error, Location, Result};
use crate::mac::Mac;
use crate::site::toml_file;

/// The `[[device]]` array's key.
const DEVICE_KEY: &str = "device";

/// Changes to one device's entry; `None` leaves a key as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DeviceEdit {
    /// New profile.
    pub(crate) profile: Option<String>,
    /// New hostname (`Some(None)`: remove the key).
    pub(crate) hostname: Option<Option<String>>,
    /// New fixed address (`Some(None)`: remove the key).
    pub(crate) ip: Option<Option<Ipv4Addr>>,
    /// New list of the device's own layers (`Some(empty)`: remove the key).
    pub(crate) overlays: Option<Vec<String>>,
    /// Template values to set (strings), in order.
    pub(crate) set_vars: Vec<(String, String)>,
    /// Template values to remove.
    pub(crate) unset_vars: Vec<String>,
}

/// Is `k` a bare TOML key, usable as `vars.K` in templates?
pub(crate) fn valid_var_name(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `devices.toml` as an editable document.
#[derive(Debug, Clone)]
pub(crate) struct InventoryDoc {
    /// The file.
    path: PathBuf,
    /// Its text as read (empty for a missing file).
    original: String,
    /// The document being edited.
    doc: DocumentMut,
}

impl InventoryDoc {
    /// Read `path`; a missing file is an empty inventory.
    pub(crate) fn read(path: &Path) -> Result<InventoryDoc> {
        let text = toml_file::read_text_if_exists(path)?.unwrap_or_default();
        InventoryDoc::parse(path, text)
    }

    /// Parse `text`, the contents of `path`.
    pub(crate) fn parse(path: &Path, text: String) -> Result<InventoryDoc> {
        let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
            let loc = match e.span() {
                Some(s) => Location::at_offset(path, &text, s.start),
                None => Location::path(path),
            };
            Error::input(loc, e.message().trim().trim_end_matches('.'))
        })?;
        let d = InventoryDoc {
            path: path.to_path_buf(),
            original: text,
            doc,
        };
        d.entries()?;
        Ok(d)
    }

    /// The text as read.
    pub(crate) fn original(&self) -> &str {
        &self.original
    }

    /// The text as edited.
    pub(crate) fn text(&self) -> String {
        self.doc.to_string()
    }

    /// The `[[device]]` entries, `None` when there are none; any other shape of `device` is an
    /// error (ovl edits only `[[device]]` tables).
    fn entries(&self) -> Result<Option<&ArrayOfTables>> {
        match self.doc.get(DEVICE_KEY) {
            None => Ok(None),
            Some(Item::ArrayOfTables(a)) => Ok(Some(a)),
            Some(_) => Err(self.shape_error()),
        }
    }

    /// The error for a `device` key that is not an array of `[[device]]` tables.
    fn shape_error(&self) -> Error {
        Error::at_path(
            &self.path,
            "`device` is not written as [[device]] tables; `ovl device` edits only those (edit this file by hand)",
        )
    }

    /// The index of `mac`'s entry (its `mac` in any spelling).
    fn find(&self, mac: Mac) -> Result<Option<usize>> {
        let Some(a) = self.entries()? else {
            return Ok(None);
        };
        Ok(a.iter().position(|t| {
            t.get("mac")
                .and_then(Item::as_str)
                .and_then(|s| s.parse::<Mac>().ok())
                == Some(mac)
        }))
    }

    /// The error for a MAC the file does not hold.
    fn not_found(&self, mac: Mac) -> Error {
        Error::device(
            mac,
            format!(
                "not in {}; add it with `ovl device add {mac} --profile NAME`",
                self.path.display()
            ),
        )
    }

    /// Append a `[[device]]` entry for `mac` with `profile` and `edit`'s other settings.
    pub(crate) fn add(&mut self, mac: Mac, profile: &str, edit: &DeviceEdit) -> Result<()> {
        if self.find(mac)?.is_some() {
            return Err(Error::device(
                mac,
                format!(
                    "already in {}; change it with `ovl device set {mac} …`",
                    self.path.display()
                ),
            ));
        }
        let mut t = Table::new();
        t.insert("mac", toml_edit::value(mac.to_string()));
        t.insert("profile", toml_edit::value(profile));
        apply(&mut t, edit);
        if !matches!(self.doc.get(DEVICE_KEY), Some(Item::ArrayOfTables(_))) {
            self.doc
                .insert(DEVICE_KEY, Item::ArrayOfTables(ArrayOfTables::new()));
        }
        match self.doc.get_mut(DEVICE_KEY) {
            Some(Item::ArrayOfTables(a)) => {
                a.push(t);
                Ok(())
            }
            _ => Err(self.shape_error()),
        }
    }

    /// Change `mac`'s entry.
    pub(crate) fn set(&mut self, mac: Mac, edit: &DeviceEdit) -> Result<()> {
        let i = self.find(mac)?.ok_or_else(|| self.not_found(mac))?;
        let t = self.entry_mut(i)?;
        apply(t, edit);
        Ok(())
    }

    /// Add `paths` to `mac`'s `discard` list (created when missing), those not in it yet
    /// (`ovl discard`).
    pub(crate) fn add_discard(&mut self, mac: Mac, paths: &[String]) -> Result<()> {
        let i = self.find(mac)?.ok_or_else(|| self.not_found(mac))?;
        let file = self.path.clone();
        let list = self
            .entry_mut(i)?
            .entry("discard")
            .or_insert(Item::Value(Value::Array(toml_edit::Array::new())))
            .as_array_mut()
            .ok_or_else(|| {
                Error::at_path(
                    &file,
                    format!("{mac}: discard is not an array of paths; fix it by hand"),
                )
            })?;
        for p in paths {
            if !list.iter().any(|v| v.as_str() == Some(p.as_str())) {
                list.push(p.as_str());
            }
        }
        Ok(())
    }

    /// Remove `mac`'s entry (with the comment lines just above it).
    pub(crate) fn remove(&mut self, mac: Mac) -> Result<()> {
        let i = self.find(mac)?.ok_or_else(|| self.not_found(mac))?;
        match self.doc.get_mut(DEVICE_KEY) {
            Some(Item::ArrayOfTables(a)) => {
                a.remove(i);
                Ok(())
            }
            _ => Err(self.shape_error()),
        }
    }

    /// The `i`th entry.
    fn entry_mut(&mut self, i: usize) -> Result<&mut Table> {
        let err = self.shape_error();
        match self.doc.get_mut(DEVICE_KEY) {
            Some(Item::ArrayOfTables(a)) => a.get_mut(i).ok_or(err),
            _ => Err(err),
        }
    }
}

/// Apply `edit` to one entry.
fn apply(t: &mut Table, edit: &DeviceEdit) {
    if let Some(p) = &edit.profile {
        set_value(t, "profile", Value::from(p.as_str()));
    }
    match &edit.hostname {
        Some(Some(h)) => set_value(t, "hostname", Value::from(h.as_str())),
        Some(None) => {
            t.remove("hostname");
        }
        None => {}
    }
    match &edit.ip {
        Some(Some(ip)) => set_value(t, "ip", Value::from(ip.to_string())),
        Some(None) => {
            t.remove("ip");
        }
        None => {}
    }
    match &edit.overlays {
        Some(list) if list.is_empty() => {
            t.remove("overlays");
        }
        Some(list) => {
            let a: toml_edit::Array = list.iter().map(String::as_str).collect();
            set_value(t, "overlays", Value::Array(a));
        }
        None => {}
    }
    vars(t, edit);
}

/// Set and unset template values; a `vars` table left empty goes.
fn vars(t: &mut Table, edit: &DeviceEdit) {
    if edit.set_vars.is_empty() && edit.unset_vars.is_empty() {
        return;
    }
    if !edit.set_vars.is_empty() && t.get("vars").and_then(Item::as_table_like).is_none() {
        // Placed under the entry as `[device.vars]`, right below it as in the example.
        let mut vt = Table::new();
        vt.decor_mut().set_prefix("");
        t.insert("vars", Item::Table(vt));
    }
    let Some(v) = t.get_mut("vars").and_then(Item::as_table_like_mut) else {
        return;
    };
    for k in &edit.unset_vars {
        v.remove(k);
    }
    for (k, val) in &edit.set_vars {
        set_like(v, k, Value::from(val.as_str()));
    }
    if v.is_empty() {
        t.remove("vars");
    }
}

/// Set `key` to `v`, keeping the old value's surrounding spaces and trailing comment.
fn set_value(t: &mut Table, key: &str, v: Value) {
    set_like(t, key, v);
}

/// [`set_value`] for any table (standard or inline).
fn set_like(t: &mut dyn TableLike, key: &str, mut v: Value) {
    match t.get_mut(key) {
        Some(Item::Value(old)) => {
            *v.decor_mut() = old.decor().clone();
            *old = v;
        }
        _ => {
            t.insert(key, Item::Value(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_is_added_and_the_rest_kept_byte_for_byte() {
        let f = Path::new("devices.toml");
        let text = "# The fleet.\n[[device]]\nmac = \"52:54:00:12:34:56\"   # hall\nprofile = \"XL\"\n[device.vars]\nscreen = \"portrait\"\n\n[[device]]\nmac = \"52-54-00-AB-CD-01\"\nprofile = \"S\"\ndiscard = [\"etc/issue\"]  # keep ours\n";
        let hall: Mac = "52:54:00:12:34:56".parse().unwrap();
        let mut d = InventoryDoc::parse(f, text.to_string()).unwrap();
        d.add_discard(hall, &["etc/motd".into()]).unwrap();
        let want = text.replace(
            "profile = \"XL\"\n",
            "profile = \"XL\"\ndiscard = [\"etc/motd\"]\n",
        );
        assert_eq!(d.text(), want);
        let office: Mac = "52:54:00:ab:cd:01".parse().unwrap();
        let mut d = InventoryDoc::parse(f, text.to_string()).unwrap();
        d.add_discard(office, &["etc/motd".into(), "etc/issue".into()])
            .unwrap();
        assert_eq!(
            d.text(),
            text.replace("[\"etc/issue\"]", "[\"etc/issue\", \"etc/motd\"]")
        );
        let unknown: Mac = "02:00:00:00:00:01".parse().unwrap();
        assert!(d.add_discard(unknown, &["x".into()]).is_err());
    }

    const FILE: &str = "# The inventory.\n\n[[device]]\nmac = \"52-54-00-12-34-56\"   # hall\nprofile = \"XL\"\nhostname = \"kiosk-hall\" # big screen\n[device.vars]\nscreen = \"portrait\"\n\n# office\n[[device]]\nmac = \"525400abcd02\"\nprofile = \"S\"\n";

    fn doc() -> InventoryDoc {
        InventoryDoc::parse(Path::new("devices.toml"), FILE.to_string()).unwrap()
    }

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    #[test]
    fn add_appends_an_entry_and_keeps_the_rest() {
        let mut d = doc();
        let edit = DeviceEdit {
            hostname: Some(Some("new-one".into())),
            ip: Some(Some("10.0.0.9".parse().unwrap())),
            overlays: Some(vec!["special/hall".into()]),
            set_vars: vec![("screen".into(), "landscape".into())],
            ..Default::default()
        };
        d.add(mac("02:00:00:00:00:09"), "S", &edit).unwrap();
        assert_eq!(
            d.text(),
            format!(
                "{FILE}\n[[device]]\nmac = \"02:00:00:00:00:09\"\nprofile = \"S\"\nhostname = \"new-one\"\nip = \"10.0.0.9\"\noverlays = [\"special/hall\"]\n[device.vars]\nscreen = \"landscape\"\n"
            )
        );
        let e = d.add(mac("52:54:00:12:34:56"), "S", &edit).unwrap_err();
        assert!(e.to_string().contains("already in devices.toml"), "{e}");
    }

    #[test]
    fn add_to_an_empty_file() {
        let mut d = InventoryDoc::parse(Path::new("devices.toml"), String::new()).unwrap();
        d.add(mac("02:00:00:00:00:09"), "S", &DeviceEdit::default())
            .unwrap();
        assert_eq!(
            d.text(),
            "[[device]]\nmac = \"02:00:00:00:00:09\"\nprofile = \"S\"\n"
        );
    }

    #[test]
    fn set_keeps_comments_and_spelling() {
        let mut d = doc();
        let edit = DeviceEdit {
            hostname: Some(Some("kiosk-lobby".into())),
            ip: Some(Some("10.0.0.5".parse().unwrap())),
            set_vars: vec![("rotate".into(), "90".into())],
            unset_vars: vec!["screen".into()],
            ..Default::default()
        };
        d.set(mac("52:54:00:12:34:56"), &edit).unwrap();
        assert_eq!(
            d.text(),
            FILE.replace(
                "hostname = \"kiosk-hall\" # big screen\n[device.vars]\nscreen = \"portrait\"\n",
                "hostname = \"kiosk-lobby\" # big screen\nip = \"10.0.0.5\"\n[device.vars]\nrotate = \"90\"\n"
            )
        );
        let unset = DeviceEdit {
            hostname: Some(None),
            ip: Some(None),
            unset_vars: vec!["rotate".into()],
            ..Default::default()
        };
        d.set(mac("52:54:00:12:34:56"), &unset).unwrap();
        assert_eq!(
            d.text(),
            FILE.replace(
                "hostname = \"kiosk-hall\" # big screen\n[device.vars]\nscreen = \"portrait\"\n",
                ""
            )
        );
        let e = d
            .set(mac("02:00:00:00:00:77"), &unset)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in devices.toml"), "{e}");
    }

    #[test]
    fn remove_takes_the_entry_and_its_comment() {
        let mut d = doc();
        d.remove(mac("52:54:00:ab:cd:02")).unwrap();
        assert_eq!(
            d.text(),
            FILE.replace(
                "\n# office\n[[device]]\nmac = \"525400abcd02\"\nprofile = \"S\"\n",
                ""
            )
        );
    }

    #[test]
    fn other_shapes_are_refused() {
        let e = InventoryDoc::parse(
            Path::new("devices.toml"),
            "device = [{ mac = \"52:54:00:12:34:56\", profile = \"S\" }]\n".into(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("[[device]] tables"), "{e}");
        let e = InventoryDoc::parse(Path::new("devices.toml"), "[[device]\n".into()).unwrap_err();
        assert!(e.to_string().starts_with("devices.toml:1:"), "{e}");
    }
}
