//! What the two CSV readers share: reading the file, finding a column by name (listing the
//! columns there are and suggesting the closest), and errors that name the line.
//!
//! CSV files have a header row; fields are trimmed; a UTF-8 byte order mark is skipped; every
//! row must have as many fields as the header.

use std::path::Path;

use crate::dataset::DatasetError;
use toucan_core::suggest::did_you_mean;

/// Reads the whole file (its bytes are also hashed as a source). A missing file is the user's
/// to fix (exit code 2), not an I/O failure.
pub fn read(path: &Path) -> Result<Vec<u8>, DatasetError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DatasetError::invalid_file(path, "no such file"),
        _ => DatasetError::io(path)(e),
    })
}

/// A reader over CSV bytes with a header row.
pub fn reader(bytes: &[u8]) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(bytes)
}

/// The header row, as text.
pub fn headers(path: &Path, reader: &mut csv::Reader<&[u8]>) -> Result<Vec<String>, DatasetError> {
    let headers = reader
        .byte_headers()
        .map_err(|e| DatasetError::invalid_file(path, e.to_string()))?;
    let headers: Vec<String> = headers
        .iter()
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(DatasetError::invalid_file(
            path,
            "empty file: expected a header row naming the columns",
        ));
    }
    Ok(headers)
}

/// The index of the column `name`, which `flag` chose.
pub fn column(
    path: &Path,
    headers: &[String],
    name: &str,
    flag: &str,
) -> Result<usize, DatasetError> {
    headers.iter().position(|h| h == name).ok_or_else(|| {
        let hint = did_you_mean(name, headers.iter().map(String::as_str));
        DatasetError::invalid_file(
            path,
            format!(
                "no column {name:?} ({flag}){hint}; the columns are: {}",
                summarize(headers)
            ),
        )
    })
}

/// The column names, shortened when there are many (a pixel table has hundreds).
fn summarize(headers: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut text = headers
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if headers.len() > SHOWN {
        text.push_str(&format!(
            ", … ({} more, the last {:?})",
            headers.len() - SHOWN,
            headers[headers.len() - 1]
        ));
    }
    text
}

/// A CSV parse error, with the line it is on.
pub fn error(path: &Path, bytes: &[u8], e: csv::Error) -> DatasetError {
    let at = |position: Option<&csv::Position>| line(bytes, position);
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "line {}: the row has {len} fields, the header {expected_len}",
            at(pos.as_ref())
        ),
        csv::ErrorKind::Utf8 { pos, err } => format!(
            "line {}: field {} is not UTF-8",
            at(pos.as_ref()),
            err.field() + 1
        ),
        _ => e.to_string(),
    };
    DatasetError::invalid_file(path, message)
}

/// The 1-based line a record starts on (the header is line 1), counted from the bytes because
/// the CSV reader's own count skips blank lines.
pub fn line(bytes: &[u8], position: Option<&csv::Position>) -> u64 {
    Lines::new(bytes).at(position)
}

/// [`line`] for records read in order, counting each byte once.
#[derive(Debug)]
pub struct Lines<'a> {
    bytes: &'a [u8],
    byte: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    pub fn new(bytes: &'a [u8]) -> Lines<'a> {
        Lines {
            bytes,
            byte: 0,
            line: 1,
        }
    }

    /// The line of `position`, which must not be before the previous one asked for.
    pub fn at(&mut self, position: Option<&csv::Position>) -> u64 {
        let mut byte = position
            .map_or(0, |p| p.byte() as usize)
            .clamp(self.byte, self.bytes.len());
        // A record's position is where the reader started, before any blank lines it skipped.
        while matches!(self.bytes.get(byte), Some(b'\n' | b'\r')) {
            byte += 1;
        }
        self.line += self.bytes[self.byte..byte]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        self.byte = byte;
        self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_column_lists_the_columns_and_suggests_one() {
        let headers: Vec<String> = ["file", "label"].map(String::from).to_vec();
        let err = column(Path::new("labels.csv"), &headers, "lable", "--label-column")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "labels.csv: no column \"lable\" (--label-column) (did you mean \"label\"?); the columns are: file, label"
        );
        let many: Vec<String> = (0..=784).map(|i| format!("pixel{i}")).collect();
        let err = column(Path::new("t.csv"), &many, "label", "--label-column")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pixel11, … (773 more, the last \"pixel784\")"),
            "{err}"
        );
    }

    #[test]
    fn lines_count_from_the_header_and_blank_lines_too() {
        let bytes: &[u8] = b"\xef\xbb\xbfa,b\n1,2\n\n3,4\n5\n";
        let mut reader = reader(bytes);
        assert_eq!(headers(Path::new("x"), &mut reader).unwrap(), ["a", "b"]);
        let mut records = reader.byte_records();
        let lines: Vec<u64> = records
            .by_ref()
            .take(2)
            .map(|r| line(bytes, r.unwrap().position()))
            .collect();
        assert_eq!(lines, [2, 4]);
        let err = error(
            Path::new("x.csv"),
            bytes,
            records.next().unwrap().unwrap_err(),
        );
        assert_eq!(
            err.to_string(),
            "x.csv: line 5: the row has 1 fields, the header 2"
        );
    }
}
