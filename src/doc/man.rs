//! The man pages of the site's file formats, ovl.toml(5) and ovl-profile(5), in roff: every
//! key from [`keys`](crate::doc::keys) (the README's tables) and the example site's own files
//! (what `ovl init` writes) as examples.

use crate::doc::keys::{Key, PROFILE_KEYS, SITE_KEYS};
use crate::site::example::EXAMPLE;

/// One man page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The page's name, e.g. `ovl-build` or `ovl.toml`.
    pub name: String,
    /// Its manual section: 1 for commands, 5 for file formats.
    pub section: u8,
    /// The page in roff.
    pub roff: String,
}

impl Page {
    /// The page's file name, e.g. `ovl-build.1`.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.name, self.section)
    }

    /// How other pages refer to it, e.g. `ovl-build(1)`.
    pub fn reference(&self) -> String {
        format!("{}({})", self.name, self.section)
    }
}

/// Text for roff: backslashes escaped, and a leading `.` or `'` (a request) made literal.
pub fn escape(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Roff with every non-ASCII character written as groff's `\[uXXXX]` escape, so that the
/// page reads the same whether or not the formatter is told the input encoding.
pub fn ascii(roff: &str) -> String {
    let mut out = String::with_capacity(roff.len());
    for c in roff.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

/// A Markdown cell in roff: `code` spans in bold, the rest as it is.
pub fn inline(markdown: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(markdown).split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("\\fB");
            out.push_str(part);
            out.push_str("\\fR");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// The `.TH` line and NAME section of a page.
pub fn heading(name: &str, section: u8, summary: &str) -> String {
    format!(
        ".TH {} {section} \"\" \"ovl {}\" \"ovl manual\"\n.SH NAME\n{} \\- {}\n",
        name.to_uppercase(),
        env!("CARGO_PKG_VERSION"),
        escape(name).replace('-', "\\-"),
        escape(summary)
    )
}

/// A SEE ALSO section naming `refs` (`name(section)`).
pub fn see_also(refs: &[String]) -> String {
    let list: Vec<String> = refs
        .iter()
        .map(|r| match r.split_once('(') {
            Some((name, rest)) => format!("\\fB{}\\fR({rest}", name.replace('-', "\\-")),
            None => r.clone(),
        })
        .collect();
    format!(".SH \"SEE ALSO\"\n{}\n", list.join(",\n"))
}

/// One `.TP` entry per row of `keys`.
fn key_entries(keys: &[Key]) -> String {
    let mut out = String::new();
    for k in keys {
        out.push_str(".TP\n");
        out.push_str(&inline(k.key));
        out.push('\n');
        if !k.default.is_empty() {
            out.push_str(&format!("Default: {}.\n.br\n", inline(k.default)));
        }
        out.push_str(&inline(k.meaning));
        out.push('\n');
    }
    out
}

/// A file of the example site, as an indented literal block.
fn example_file(path: &str) -> String {
    let text = EXAMPLE
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, bytes, _)| String::from_utf8_lossy(bytes).into_owned())
        .unwrap_or_default();
    format!(
        ".PP\n\\fI{path}\\fR of the example site (\\fBovl init\\fR):\n.RS\n.nf\n{}\n.fi\n.RE\n",
        escape(text.trim_end())
    )
}

/// ovl.toml(5); `see_also` are the other pages to name.
pub fn ovl_toml(see_also_refs: &[String]) -> Page {
    let mut roff = heading("ovl.toml", 5, "the settings of an ovl site");
    roff.push_str(
        ".SH SYNOPSIS\n\\fISITE\\fR/ovl.toml\n.SH DESCRIPTION\n\
         The site folder holds \\fBovl.toml\\fR (this page), \\fBprofiles/\\fR\\fINAME\\fR\\fB.toml\\fR \
         (see \\fBovl\\-profile\\fR(5)), \\fBoverlays/\\fR, \\fBdevices.toml\\fR and \\fBcaptures/\\fR; \
         \\fBovl\\fR finds it as cargo finds \\fBCargo.toml\\fR (or by \\fB\\-\\-site\\fR, \
         \\fB$OVL_SITE\\fR).\n.PP\n\
         Every key is optional. An unknown key, a value of the wrong type or out of range is an \
         error naming \\fBovl.toml\\fR with its line and column (exit code 1), with the nearest \
         known key suggested. TOML cannot hold both \\fBdhcp = \"proxy\"\\fR and a \
         \\fB[serve.dhcp]\\fR table: the mode is either the string or the table's \\fBmode\\fR.\n\
         .SH KEYS\n",
    );
    roff.push_str(&key_entries(SITE_KEYS));
    roff.push_str(".SH EXAMPLE\n");
    roff.push_str(&example_file("ovl.toml"));
    roff.push_str(&see_also(see_also_refs));
    Page {
        name: "ovl.toml".into(),
        section: 5,
        roff: ascii(&roff),
    }
}

/// ovl-profile(5); `see_also` are the other pages to name.
pub fn ovl_profile(see_also_refs: &[String]) -> Page {
    let mut roff = heading(
        "ovl-profile",
        5,
        "device profiles and the inventory of an ovl site",
    );
    roff.push_str(
        ".SH SYNOPSIS\n\\fISITE\\fR/profiles/\\fINAME\\fR.toml, \\fISITE\\fR/devices.toml\n\
         .SH DESCRIPTION\n\
         A profile declares what a class of device gets; its file stem is the profile's name. \
         \\fBextends\\fR inherits from another profile (chains allowed; a cycle is an error \
         naming it). Unknown keys are errors naming the file, line and column, with the nearest \
         known key suggested.\n.PP\n\
         Layers, lowest first: the profile chain's layers (root ancestor first), the device's \
         own layers, the device's capture (\\fBcaptures/\\fR\\fIMAC\\fR\\fB/*.apkovl.tar.gz\\fR), \
         then what the TOML declares.\n.PP\n\
         Overlay files ending in \\fB.j2\\fR, inline file contents, the host name, \
         \\fBinterfaces\\fR, \\fBresolv_conf\\fR and \\fBrepositories\\fR are minijinja templates. \
         Variables: \\fBmac\\fR, \\fBmac_suffix\\fR, \\fBhostname\\fR, \\fBprofile\\fR, \\fBip\\fR, \
         \\fBvars.*\\fR, \\fBsite.alpine.{version,flavor,mirror}\\fR, \\fBsite.boot.{server,nfs}\\fR, \
         \\fBsite.http\\fR. An undefined variable is an error with file and line.\n\
         .SH KEYS\n",
    );
    roff.push_str(&key_entries(PROFILE_KEYS));
    roff.push_str(
        ".SH INVENTORY\n\\fBdevices.toml\\fR lists \\fB[[device]]\\fR entries: \\fBmac\\fR \
         (any common spelling; stored lowercase with colons), \\fBprofile\\fR, and optionally \
         \\fBhostname\\fR (wins over the profile's template), \\fBip\\fR (fixed DHCP address), \
         \\fBoverlays\\fR (extra layers for this device) and \\fB[device.vars]\\fR (wins over the \
         profile's vars). Duplicate MACs, host names and addresses and unknown profiles are \
         errors with line and column.\n.SH EXAMPLES\n",
    );
    roff.push_str(&example_file("profiles/XL.toml"));
    roff.push_str(&example_file("devices.toml"));
    roff.push_str(&see_also(see_also_refs));
    Page {
        name: "ovl-profile".into(),
        section: 5,
        roff: ascii(&roff),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_escapes_and_code_spans() {
        assert_eq!(inline("`a\\b` c"), "\\fBa\\eb\\fR c");
        assert_eq!(escape(".x\n'y\nz"), "\\&.x\n\\&'y\nz");
        assert_eq!(ascii("a … b"), "a \\[u2026] b");
    }

    #[test]
    fn file_pages_hold_every_key_and_an_example() {
        let page = ovl_toml(&["ovl(1)".into()]);
        assert_eq!(page.file_name(), "ovl.toml.5");
        for k in SITE_KEYS {
            assert!(page.roff.contains(&ascii(&inline(k.key))), "{}", k.key);
        }
        assert!(page.roff.contains("[alpine]\nversion = "), "{}", page.roff);
        assert!(page.roff.contains(".SH \"SEE ALSO\"\n\\fBovl\\fR(1)\n"));
        let page = ovl_profile(&[]);
        for k in PROFILE_KEYS {
            assert!(page.roff.contains(&ascii(&inline(k.key))), "{}", k.key);
        }
        assert!(page.roff.contains("extends = \"S\""), "{}", page.roff);
    }
}
