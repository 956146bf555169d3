//! A labels CSV: one row per image, naming its file (relative to the source folder) and its
//! label (see [`super`]).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::{FolderOptions, Listed, Listing, is_image, slash_path};
use crate::dataset::{DatasetError, SourceFile, sha256_hex};
use crate::ingest::labels::{self, LabelError};
use crate::ingest::{csv_file, file_name};

/// The images the CSV lists, with their labels, in path order; the CSV is the first source.
pub(super) fn list(
    dir: &Path,
    csv: &Path,
    opts: FolderOptions<'_>,
) -> Result<Listing, DatasetError> {
    let bytes = csv_file::read(csv)?;
    let mut reader = csv_file::reader(&bytes);
    let headers = csv_file::headers(csv, &mut reader)?;
    let image_at = csv_file::column(csv, &headers, opts.image_column, "--image-column")?;
    let label_at = csv_file::column(csv, &headers, opts.label_column, "--label-column")?;
    let at = |line: u64, column: usize, message: String| {
        DatasetError::invalid_file(
            csv,
            format!("line {line}, column {:?}: {message}", headers[column]),
        )
    };

    let mut rows: Vec<(PathBuf, u64)> = Vec::new();
    let mut values = Vec::new();
    let mut seen: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let mut lines = csv_file::Lines::new(&bytes);
    for record in reader.records() {
        let record = record.map_err(|e| csv_file::error(csv, &bytes, e))?;
        let line = lines.at(record.position());
        let file = record.get(image_at).unwrap_or_default();
        let rel = relative_path(file).map_err(|m| at(line, image_at, m))?;
        if !is_image(&rel) {
            return Err(at(
                line,
                image_at,
                format!("{file}: not a .png, .jpg or .jpeg file"),
            ));
        }
        if let Some(first) = seen.insert(rel.clone(), line) {
            return Err(at(
                line,
                image_at,
                format!("{file} is listed twice (lines {first} and {line})"),
            ));
        }
        if !dir.join(&rel).is_file() {
            return Err(at(
                line,
                image_at,
                format!("{file} does not exist in {}", dir.display()),
            ));
        }
        values.push(record.get(label_at).unwrap_or_default().to_string());
        rows.push((rel, line));
    }
    if rows.is_empty() {
        return Err(DatasetError::invalid_file(
            csv,
            "no images: the labels file has a header row but no rows",
        ));
    }
    let classes = labels::assign(&values, opts.class_names, true).map_err(
        |LabelError { index, message }| match index {
            Some(i) => at(rows[i].1, label_at, message),
            None => DatasetError::invalid_file(csv, message),
        },
    )?;
    let mut listed: Vec<Listed> = rows
        .into_iter()
        .zip(classes.labels)
        .map(|((rel, _), label)| Listed { rel, label })
        .collect();
    listed.sort();
    let name = match csv.strip_prefix(dir) {
        Ok(rel) => slash_path(rel),
        Err(_) => file_name(csv),
    };
    let sources = vec![SourceFile {
        file: name,
        sha256: sha256_hex(&bytes),
    }];
    Ok(Listing {
        images: listed,
        classes: classes.names,
        sources,
    })
}

/// A path from the labels CSV, which must stay inside the source folder (`./` is dropped).
fn relative_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("the file name is empty".into());
    }
    let mut rel = PathBuf::new();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{text}: paths must be relative to --source and stay inside it"
                ));
            }
        }
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_labels_csv_paths_inside_the_source() {
        assert_eq!(relative_path("./a/b.png"), Ok(PathBuf::from("a/b.png")));
        for bad in ["", "../x.png", "/etc/x.png", "a/../../x.png"] {
            assert!(relative_path(bad).is_err(), "{bad}");
        }
    }
}
