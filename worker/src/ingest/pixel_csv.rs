//! CSV pixel tables, like the Kaggle Fashion-MNIST CSVs: a header row, a label column
//! (`--label-column`, default `label`) and one column per pixel value (`pixel1..pixel784`).
//!
//! The pixels are the columns named `pixel` and a number when the table has any (other
//! columns, such as those of toucan's labelled production samples, are left out), else every
//! column but the label; in file order, read as the image's HWC values (row by row, channels
//! last). The shape is `--image-shape HxWxC`, or, without it, square
//! grayscale when the number of pixel columns is a perfect square (784 → 28x28x1). Values are
//! integers in 0..=255. Labels follow [`super::labels`] (numbers or class names).

use std::path::Path;

use super::labels::{self, LabelError};
use super::{Records, csv_file, file_name};
use crate::dataset::{DatasetError, ImageShape, SourceFile, sha256_hex};

/// How to read a pixel table.
#[derive(Debug, Clone, Copy)]
pub struct TableOptions<'a> {
    pub label_column: &'a str,
    pub shape: Option<ImageShape>,
    pub class_names: Option<&'a [String]>,
    /// What gave `shape`, for the message when the table does not match it.
    pub shape_from: &'a str,
}

/// Reads the table: records in file order, and the class names.
pub fn read(path: &Path, opts: TableOptions<'_>) -> Result<(Records, Vec<String>), DatasetError> {
    read_rows(path, opts)?.ok_or_else(|| {
        DatasetError::invalid_file(path, "no records: the file has a header row but no rows")
    })
}

/// Reads the table like [`read`], or `None` when it has a header row and no rows.
pub fn read_rows(
    path: &Path,
    opts: TableOptions<'_>,
) -> Result<Option<(Records, Vec<String>)>, DatasetError> {
    let bytes = csv_file::read(path)?;
    let mut reader = csv_file::reader(&bytes);
    let headers = csv_file::headers(path, &mut reader)?;
    let label_at = csv_file::column(path, &headers, opts.label_column, "--label-column")?;
    let named: Vec<usize> = (0..headers.len())
        .filter(|&c| {
            headers[c]
                .strip_prefix("pixel")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    let pixel_columns: Vec<usize> = if named.is_empty() {
        (0..headers.len()).filter(|&c| c != label_at).collect()
    } else {
        named
    };
    // Judged once there are rows: a table with none (and maybe no pixel columns) is empty.
    let shape = shape(
        pixel_columns.len(),
        opts.shape.map(|s| (s, opts.shape_from)),
        opts.label_column,
    );

    let mut values = Vec::new();
    let mut row_lines = Vec::new();
    let mut pixels = Vec::new();
    let mut lines = csv_file::Lines::new(&bytes);
    for record in reader.byte_records() {
        let record = record.map_err(|e| csv_file::error(path, &bytes, e))?;
        let line = lines.at(record.position());
        let at = |column: usize, message: String| {
            DatasetError::invalid_file(
                path,
                format!(
                    "line {line}, column {} ({:?}): {message}",
                    column + 1,
                    headers[column]
                ),
            )
        };
        let field = record.get(label_at).unwrap_or_default();
        let label = std::str::from_utf8(field)
            .map_err(|_| at(label_at, "the label is not UTF-8".into()))?;
        values.push(label.to_string());
        for &column in &pixel_columns {
            let field = record.get(column).unwrap_or_default();
            pixels.push(pixel(field).ok_or_else(|| {
                at(
                    column,
                    format!(
                        "{:?} is not an integer in 0..=255",
                        String::from_utf8_lossy(field)
                    ),
                )
            })?);
        }
        row_lines.push(line);
    }
    if values.is_empty() {
        return Ok(None);
    }
    let shape = shape.map_err(|m| DatasetError::invalid_file(path, m))?;
    let classes = labels::assign(&values, opts.class_names, true).map_err(
        |LabelError { index, message }| match index {
            Some(i) => DatasetError::invalid_file(
                path,
                format!(
                    "line {}, column {} ({:?}): {message}",
                    row_lines[i],
                    label_at + 1,
                    headers[label_at]
                ),
            ),
            None => DatasetError::invalid_file(path, message),
        },
    )?;
    let records = Records {
        shape,
        labels: classes.labels,
        pixels,
        sources: vec![SourceFile {
            file: file_name(path),
            sha256: sha256_hex(&bytes),
        }],
        metadata: Default::default(),
    };
    Ok(Some((records, classes.names)))
}

/// The labelled records a table adds to a dataset of `shape` and `classes` (`--add-train`, in
/// ingest and in train): `None` for an empty path or a table without rows.
pub fn read_added(
    path: &Path,
    shape: ImageShape,
    classes: &[String],
) -> Result<Option<Records>, DatasetError> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let read = read_rows(
        path,
        TableOptions {
            label_column: super::DEFAULT_LABEL_COLUMN,
            shape: Some(shape),
            class_names: Some(classes),
            shape_from: "the dataset's image shape",
        },
    )?;
    Ok(read.map(|(records, _)| records))
}

/// The image shape of `count` pixel columns: `given`, which must match, or square grayscale.
pub fn shape(
    count: usize,
    given: Option<(ImageShape, &str)>,
    label_column: &str,
) -> Result<ImageShape, String> {
    let columns = format!("every column but {label_column:?}");
    if count == 0 {
        return Err(format!("no pixel columns ({columns})"));
    }
    match given {
        Some((shape, _)) if shape.pixels() == count => Ok(shape),
        Some((shape, given_by)) => Err(format!(
            "{given_by} {}x{}x{} needs {} pixel columns, the file has {count} ({columns})",
            shape.height,
            shape.width,
            shape.channels,
            shape.pixels()
        )),
        None => {
            let side = count.isqrt();
            if side * side == count {
                Ok(ImageShape {
                    height: side as u32,
                    width: side as u32,
                    channels: 1,
                })
            } else {
                Err(format!(
                    "{count} pixel columns ({columns}) is not a square number, so the image shape cannot be inferred; give --image-shape HxWxC (e.g. 32x32x3)"
                ))
            }
        }
    }
}

/// A pixel value: decimal digits for 0..=255 (leading zeros allowed).
fn pixel(field: &[u8]) -> Option<u8> {
    if field.is_empty() {
        return None;
    }
    let mut value: u32 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
        if value > 255 {
            return None;
        }
    }
    Some(value as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pixel_values() {
        for (field, want) in [
            ("0", Some(0)),
            ("255", Some(255)),
            ("007", Some(7)),
            ("0000255", Some(255)),
            ("256", None),
            ("-1", None),
            ("1.0", None),
            ("", None),
            ("12a", None),
            ("99999999999", None),
        ] {
            assert_eq!(pixel(field.as_bytes()), want, "{field:?}");
        }
    }

    #[test]
    fn infers_square_grayscale_or_asks_for_the_shape() {
        let square = |s| ImageShape {
            height: s,
            width: s,
            channels: 1,
        };
        assert_eq!(shape(784, None, "label"), Ok(square(28)));
        assert_eq!(shape(1, None, "label"), Ok(square(1)));
        let rgb = ImageShape {
            height: 32,
            width: 32,
            channels: 3,
        };
        assert_eq!(shape(3072, Some((rgb, "--image-shape")), "label"), Ok(rgb));
        assert!(
            shape(3072, None, "label")
                .unwrap_err()
                .contains("--image-shape")
        );
        assert!(
            shape(3071, Some((rgb, "--image-shape")), "label")
                .unwrap_err()
                .contains("needs 3072")
        );
        assert!(
            shape(0, None, "y")
                .unwrap_err()
                .contains("every column but \"y\"")
        );
    }
}
