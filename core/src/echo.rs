//! Showing a value the user wrote inside an error message, without echoing all of it.
//!
//! An error about a 10 MB value must not print 10 MB: [`quote`] shows the first
//! [`SHOWN_CHARS`] characters and the full length, which is enough to find the value in the
//! input.

/// How many characters of a long value a message shows.
pub const SHOWN_CHARS: usize = 80;

/// `text` quoted as Rust's `{:?}` would, cut to its first [`SHOWN_CHARS`] characters with the
/// full size when longer: `"aaaa…" (10485760 bytes)`.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?} ({} bytes)", format!("{}…", &text[..end]), text.len()),
    }
}

/// `text` unquoted, cut like [`quote`] when longer than [`SHOWN_CHARS`] characters: for a
/// name inside a field path.
pub fn cut(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => text.into(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_shown_whole() {
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        let exactly = "é".repeat(SHOWN_CHARS);
        assert_eq!(quote(&exactly), format!("{exactly:?}"));
    }

    #[test]
    fn long_values_are_cut_with_their_size() {
        let long = "x".repeat(10 << 20);
        let shown = quote(&long);
        assert_eq!(
            shown,
            format!("\"{}…\" (10485760 bytes)", "x".repeat(SHOWN_CHARS))
        );
        assert_eq!(
            cut(&long),
            format!("{}… (10485760 bytes)", "x".repeat(SHOWN_CHARS))
        );
        assert_eq!(cut("name"), "name");
        let wide = "é".repeat(SHOWN_CHARS + 1);
        assert!(quote(&wide).ends_with("(162 bytes)"), "{}", quote(&wide));
    }
}
