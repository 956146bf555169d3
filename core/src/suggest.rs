//! "Did you mean" suggestions for misspelled names: field names, step and parameter names,
//! enum values in manifests, and column and class names in the worker's data.
//!
//! One rule everywhere, compared without case: a candidate is close when its Jaro-Winkler
//! similarity is at least [`MIN_SIMILARITY`], or, for names of three or more characters, when
//! it is one edit away counting a swap of two neighbours as one edit (Jaro-Winkler misses
//! `dgo` for `dog`). Fewer edits win, then the higher similarity, then the earlier candidate.

/// The Jaro-Winkler similarity at or above which a candidate is a likely typo.
pub const MIN_SIMILARITY: f64 = 0.8;

/// The candidate closest to `name`, if one is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.to_lowercase();
    let long_enough = name.chars().count() >= 3;
    let mut best: Option<(usize, f64, &'a str)> = None;
    for candidate in candidates {
        let lower = candidate.to_lowercase();
        let similarity = strsim::jaro_winkler(&name, &lower);
        let edits = strsim::osa_distance(&name, &lower);
        if !(similarity >= MIN_SIMILARITY || (edits <= 1 && long_enough)) {
            continue;
        }
        let better = best.is_none_or(|(e, s, _)| edits < e || (edits == e && similarity > s));
        if better {
            best = Some((edits, similarity, candidate));
        }
    }
    best.map(|(_, _, c)| c)
}

/// ` (did you mean "x"?)`, or nothing when no candidate is close.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// `; did you mean "x"?`, to end a message that already lists what was expected, or nothing
/// when no candidate is close.
pub fn did_you_mean_clause<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    closest(name, candidates)
        .map(|c| format!("; did you mean {c:?}?"))
        .unwrap_or_default()
}

/// A hint for an unknown name: the close candidate if there is one, else the full list
/// (`what` names the kind of thing, e.g. "parameters"), else that there are none.
pub fn unknown_name_hint(name: &str, candidates: &[&str], what: &str) -> String {
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
        assert_eq!(closest("lable", ["file", "label"]), Some("label"));
        assert_eq!(closest("Filename", ["file", "label"]), Some("file"));
        assert_eq!(closest("emu", ["emus", "emo"]), Some("emus"));
        assert_eq!(closest("zzz", ["train", "ingest"]), None);
        assert_eq!(closest("a", ["b"]), None);
    }

    #[test]
    fn a_swap_of_neighbours_is_one_edit() {
        assert_eq!(
            did_you_mean("dgo", ["cat", "dog"]),
            " (did you mean \"dog\"?)"
        );
        assert_eq!(did_you_mean("zzz", ["cat", "dog"]), "");
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
