//! Names in URLs: the one percent-encoding every client of the control-plane API uses.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Every byte but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` as one URL path segment: everything but unreserved characters percent-encoded, so a
/// node name such as `shard[3]` or a name with `/` stays one segment.
pub fn path_segment(s: &str) -> String {
    utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_stay() {
        assert_eq!(path_segment("shard[3]"), "shard%5B3%5D");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(path_segment("train-1.x_y~"), "train-1.x_y~");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
