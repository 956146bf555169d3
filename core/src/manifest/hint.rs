//! "Did you mean" hints for misspelled names.

/// The candidate closest to `name`, if one is close enough to be a likely typo.
pub(super) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let name = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&name, &c.to_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// ` (did you mean "x"?)`, or nothing when no candidate is close.
pub(super) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    closest(name, candidates)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// A hint for an unknown name: the close candidate if there is one, else the full list
/// (`what` names the kind of thing, e.g. "parameters"), else that there are none.
pub(super) fn unknown_name_hint(name: &str, candidates: &[&str], what: &str) -> String {
    if let Some(c) = closest(name, candidates.iter().copied()) {
        return format!(" (did you mean {c:?}?)");
    }
    let mut unique: Vec<&str> = Vec::with_capacity(candidates.len());
    for c in candidates {
        if !unique.contains(c) {
            unique.push(c);
        }
    }
    match unique.as_slice() {
        [] => format!(" (there are no {what})"),
        _ => format!(" (expected one of: {})", unique.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            closest("trian", ["ingest", "train", "export"]),
            Some("train")
        );
        assert_eq!(closest("epoch", ["epochs", "seed"]), Some("epochs"));
        assert_eq!(
            closest("forbid", ["Allow", "Forbid", "Replace"]),
            Some("Forbid")
        );
        assert_eq!(closest("zzz", ["train", "ingest"]), None);
        assert_eq!(closest("a", ["b"]), None);
    }

    #[test]
    fn lists_candidates_when_none_is_close() {
        assert_eq!(
            unknown_name_hint("zzz", &["a", "b", "a"], "parameters"),
            " (expected one of: a, b)"
        );
        assert_eq!(
            unknown_name_hint("zzz", &[], "parameters"),
            " (there are no parameters)"
        );
    }
}
