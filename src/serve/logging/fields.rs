//! The fields of a text log line, written as tracing-subscriber's default formatter writes
//! them without colours (`name=value`, strings quoted as `{:?}` quotes them), only faster
//! for the common kinds: a string of printable ASCII with no quote or backslash is written
//! between quotes as it is, integers with `itoa`, booleans as words, `?value` and `%value`
//! fields with `{:?}` straight away. The rest (the message, `r#` names, `log.` fields,
//! errors, strings that need escapes) goes to tracing-subscriber's own visitor, so the line
//! is byte for byte the one it would write. Every request writes such a line.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// The fields formatter of text lines without colours.
#[derive(Debug, Default)]
pub(super) struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut v = Visitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct Visitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

/// Names the default visitor writes otherwise than `name=value`.
fn is_special(name: &str) -> bool {
    name == "message" || name.starts_with("r#") || name.starts_with("log.")
}

/// Would `{:?}` write `s` as it is between quotes?
fn needs_no_escape(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visitor<'_> {
    /// The default visitor's answer for one field, continuing this line.
    fn delegate(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut v = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut v);
        self.result = v.finish();
        // It writes every field but the `log.` ones (and pads before each but the first).
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    /// `name=` with the separating space when needed.
    fn start(&mut self, field: &Field) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }

    fn plain(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self
                .start(field)
                .and_then(|()| self.writer.write_str(value));
        }
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if is_special(field.name()) || !needs_no_escape(value) {
            return self.delegate(field, |v| v.record_str(field, value));
        }
        if self.result.is_ok() {
            self.result = self.start(field).and_then(|()| {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if is_special(field.name()) {
            return self.delegate(field, |v| v.record_u64(field, value));
        }
        self.plain(field, itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if is_special(field.name()) {
            return self.delegate(field, |v| v.record_i64(field, value));
        }
        self.plain(field, itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if is_special(field.name()) {
            return self.delegate(field, |v| v.record_bool(field, value));
        }
        self.plain(field, if value { "true" } else { "false" });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.delegate(field, |v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if is_special(field.name()) {
            return self.delegate(field, |v| v.record_debug(field, value));
        }
        // What the default visitor writes without colours: `name={value:?}`.
        if self.result.is_ok() {
            self.result = self
                .start(field)
                .and_then(|()| write!(self.writer, "{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    /// The lines `emit` logs with the default fields formatter and with [`PlainFields`]
    /// (no time, no colours, as `ovl serve` sets up otherwise).
    fn both(emit: impl Fn()) -> (String, String) {
        let (a, b) = (Buf::default(), Buf::default());
        let default = tracing_subscriber::fmt()
            .with_writer(a.clone())
            .with_ansi(false)
            .with_target(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(default, &emit);
        let plain = tracing_subscriber::fmt()
            .with_writer(b.clone())
            .with_ansi(false)
            .with_target(false)
            .without_time()
            .fmt_fields(PlainFields)
            .finish();
        tracing::subscriber::with_default(plain, &emit);
        let text = |b: Buf| String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        (text(a), text(b))
    }

    #[derive(Debug)]
    struct Oops;
    impl fmt::Display for Oops {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("oops \"quoted\"")
        }
    }
    impl std::error::Error for Oops {}

    #[test]
    fn lines_are_those_of_the_default_formatter() {
        let (a, b) = both(|| {
            let s = "plain";
            tracing::info!(event = "http_request", method = %"GET", file = %"/configs/a b",
                status = 200u16, bytes = 4096u64, neg = -5i64, complete = true, mac = "",
                reason = s, "http");
            tracing::warn!(r#type = "x", quote = "say \"hi\"", tab = "a\tb", nl = "a\nb",
                uni = "é ✓", back = "a\\b", ctrl = "\u{1b}[31m", float = 1.5f64,
                dbg = ?vec![1, 2], "message with {} and \"quotes\"", 3);
            tracing::error!(
                error = &Oops as &(dyn std::error::Error + 'static),
                n = 0u64
            );
            tracing::info!(only = 1u64);
            tracing::info!("just a message");
            tracing::info!(max = u64::MAX, min = i64::MIN, f = false);
        });
        assert!(a.lines().count() == 6, "{a}");
        assert_eq!(a, b);
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_written_as_the_default_formatter_writes_it(s in ".{0,40}", n: u64, i: i64) {
            let (a, b) = both(|| tracing::info!(event = "e", value = s.as_str(), n, i, "m"));
            proptest::prop_assert_eq!(a, b);
        }
    }
}
