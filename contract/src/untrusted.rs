//! Text from outside the daemon's trust (plugins, bundle files, MQTT topics, errors built
//! from them) made safe to log and to publish: bounded in length, and with every control
//! character escaped, so a `\n` cannot start a forged log line and an ESC cannot drive the
//! terminal that shows the log.
//!
//! Use [`escape`] for anything that goes into a log line or a status document, [`bound`] where
//! only the length matters (the text is JSON-encoded anyway).

use std::fmt::{self, Write};

/// A log field or status reason longer than this is cut (with a note of how much was cut).
pub const MAX_FIELD: usize = 512;

/// `text` cut to at most `max` bytes on a character boundary; a cut text ends with a note
/// of the bytes left out, so a reader knows it is not the whole.
pub fn bound(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes more)", &text[..end], text.len() - end).into()
}

/// `text` with control characters escaped and cut to about `max` bytes of its own (the
/// escapes may make the result longer, at most sixfold).
pub fn escape(text: &str, max: usize) -> String {
    Escaped { text, max }.to_string()
}

/// [`escape`] as a `Display` value, for log fields: `%Escaped::new(&reason)`.
#[derive(Clone, Copy)]
pub struct Escaped<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Escaped<'a> {
    /// Escaped and bounded to [`MAX_FIELD`].
    pub fn new(text: &'a str) -> Escaped<'a> {
        Escaped::bounded(text, MAX_FIELD)
    }

    /// Escaped and bounded to `max` bytes of `text`.
    pub fn bounded(text: &'a str, max: usize) -> Escaped<'a> {
        Escaped { text, max }
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut used = 0;
        for (i, c) in self.text.char_indices() {
            if used + c.len_utf8() > self.max {
                return write!(f, "… ({} bytes more)", self.text.len() - i);
            }
            used += c.len_utf8();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                // C0 and C1 controls (ESC among them), DEL, and what terminals or log viewers
                // take for a line break or a change of text direction.
                c if c.is_control()
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}')
                    || matches!(c, '\u{2066}'..='\u{2069}') =>
                {
                    write!(f, "\\u{{{:x}}}", c as u32)?
                }
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_break_or_an_escape_sequence_becomes_visible_text() {
        let forged = "ok\n2026-01-01T00:00:00Z  INFO probegate::bundle::install: installed\r\x1b[31mred\u{2028}";
        let safe = escape(forged, 1000);
        assert!(!safe.chars().any(|c| c.is_control()), "{safe}");
        assert_eq!(
            safe,
            "ok\\n2026-01-01T00:00:00Z  INFO probegate::bundle::install: installed\\r\\u{1b}[31mred\\u{2028}"
        );
        assert_eq!(
            escape("a\\nb", 100),
            "a\\\\nb",
            "a literal backslash stays unambiguous"
        );
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_and_says_so() {
        let long = "é".repeat(1000);
        let cut = escape(&long, 11);
        assert_eq!(cut, format!("{}… (1990 bytes more)", "é".repeat(5)));
        assert_eq!(
            bound(&long, 11),
            format!("{}… (1990 bytes more)", "é".repeat(5))
        );
        assert_eq!(bound("short", 11), "short");
        let huge = "x".repeat(4 << 20);
        assert!(escape(&huge, MAX_FIELD).len() < MAX_FIELD + 40);
    }
}
