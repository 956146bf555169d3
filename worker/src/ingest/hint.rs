//! "Did you mean" hints for misspelled column and class names.

/// The candidate closest to `name` when it is close enough to be a likely typo, compared
/// without case: a Jaro-Winkler similarity of at least 0.8 (the manifest's threshold), or for
/// names of three or more characters one edit away, counting a swap of two neighbours as one
/// edit (Jaro-Winkler misses `dgo` for `dog`). Fewer edits win, then the higher similarity.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.to_lowercase();
    candidates
        .into_iter()
        .filter_map(|c| {
            let lower = c.to_lowercase();
            let similarity = strsim::jaro_winkler(&name, &lower);
            let edits = strsim::osa_distance(&name, &lower);
            let close = similarity >= 0.8 || (edits <= 1 && name.chars().count() >= 3);
            close.then_some((edits, similarity, c))
        })
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| c)
}

/// ` (did you mean "x"?)`, or nothing when no candidate is close.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(closest("lable", ["file", "label"]), Some("label"));
        assert_eq!(closest("Filename", ["file", "label"]), Some("file"));
        assert_eq!(closest("zzz", ["file", "label"]), None);
        assert_eq!(closest("a", ["b"]), None);
        assert_eq!(closest("emu", ["emus", "emo"]), Some("emus"));
        assert_eq!(
            did_you_mean("dgo", ["cat", "dog"]),
            " (did you mean \"dog\"?)"
        );
        assert_eq!(did_you_mean("zzz", ["cat", "dog"]), "");
    }
}
