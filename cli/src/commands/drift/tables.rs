//! Reading the two tables `toucan drift` compares: CSV (the `csv` crate) or Parquet (the
//! `parquet` crate's column readers, one column at a time, so a wide file is never all in
//! memory). The format comes from the file's first bytes (`PAR1`), else from its extension.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use parquet::basic::Type as PhysicalType;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::DataType;
use parquet::file::reader::{FileReader, SerializedFileReader};

/// Cells read as missing (and left out of the comparison), as pandas reads them.
const MISSING: [&str; 7] = ["", "NA", "N/A", "NaN", "nan", "null", "NULL"];

/// Values of one column as a file holds them.
#[derive(Debug)]
pub enum RawColumn {
    /// Typed numbers (Parquet numeric columns).
    Numbers(Vec<f64>),
    /// Text (CSV cells, Parquet strings and booleans); numbers when every cell parses.
    Text(Vec<String>),
}

/// Why a table could not be read; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Csv { path: PathBuf, message: String },
    #[error("{path}: row {row} has {found} fields, the header has {expected}")]
    RowLength {
        path: PathBuf,
        row: u64,
        found: usize,
        expected: usize,
    },
    #[error("{path}: reading Parquet: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: column {column:?} has Parquet type {kind}, which toucan drift cannot compare")]
    UnsupportedType {
        path: PathBuf,
        column: String,
        kind: String,
    },
    #[error("{path}: column {column:?} appears more than once")]
    DuplicateColumn { path: PathBuf, column: String },
}

/// An open table whose columns can be read by name.
pub enum Table {
    /// CSV is row-oriented: every wanted column is read at once.
    Csv {
        path: PathBuf,
        names: Vec<String>,
        columns: Mutex<Vec<Option<Vec<String>>>>,
    },
    /// Parquet columns are read when asked for, each through a reader of its own: the handles
    /// a reader clones from its `File` share one file offset, so threads must not share one.
    Parquet { path: PathBuf, names: Vec<String> },
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("path", &self.path()).finish()
    }
}

impl Table {
    /// Opens `path`; for CSV reads the columns `wanted` says yes to.
    pub fn open(path: &Path, wanted: &dyn Fn(&str) -> bool) -> Result<Table, TableError> {
        let open_err = |source| TableError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut magic = [0u8; 4];
        let mut file = File::open(path).map_err(open_err)?;
        let is_parquet = match file.read_exact(&mut magic) {
            Ok(()) => &magic == b"PAR1",
            Err(_) => false,
        } || path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
        if is_parquet {
            let file = File::open(path).map_err(open_err)?;
            let reader = SerializedFileReader::new(file).map_err(|source| TableError::Parquet {
                path: path.to_path_buf(),
                source,
            })?;
            let schema = reader.metadata().file_metadata().schema_descr_ptr();
            let names: Vec<String> = (0..schema.num_columns())
                .map(|i| schema.column(i).path().string())
                .collect();
            check_unique(path, &names)?;
            return Ok(Table::Parquet {
                path: path.to_path_buf(),
                names,
            });
        }
        read_csv(path, wanted)
    }

    pub fn path(&self) -> &Path {
        match self {
            Table::Csv { path, .. } | Table::Parquet { path, .. } => path,
        }
    }

    /// Column names in file order.
    pub fn names(&self) -> &[String] {
        match self {
            Table::Csv { names, .. } | Table::Parquet { names, .. } => names,
        }
    }

    /// The non-missing values of column `name` (which must be one of [`Table::names`]).
    /// A CSV column can be taken once.
    pub fn take(&self, name: &str) -> Result<RawColumn, TableError> {
        match self {
            Table::Csv { names, columns, .. } => {
                let index = names.iter().position(|n| n == name).unwrap_or(usize::MAX);
                let mut columns = columns
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let cells = columns
                    .get_mut(index)
                    .and_then(Option::take)
                    .unwrap_or_default();
                Ok(RawColumn::Text(cells))
            }
            Table::Parquet { path, names } => {
                let index = names.iter().position(|n| n == name).unwrap_or(usize::MAX);
                let file = File::open(path).map_err(|source| TableError::Open {
                    path: path.clone(),
                    source,
                })?;
                let reader =
                    SerializedFileReader::new(file).map_err(|source| TableError::Parquet {
                        path: path.clone(),
                        source,
                    })?;
                read_parquet_column(path, &reader, index, name)
            }
        }
    }
}

fn check_unique(path: &Path, names: &[String]) -> Result<(), TableError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name.as_str()) {
            return Err(TableError::DuplicateColumn {
                path: path.to_path_buf(),
                column: name.clone(),
            });
        }
    }
    Ok(())
}

fn read_csv(path: &Path, wanted: &dyn Fn(&str) -> bool) -> Result<Table, TableError> {
    let csv_err = |e: csv::Error| TableError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| match e.into_kind() {
            csv::ErrorKind::Io(source) => TableError::Open {
                path: path.to_path_buf(),
                source,
            },
            other => TableError::Csv {
                path: path.to_path_buf(),
                message: format!("{other:?}"),
            },
        })?;
    let names: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(str::to_string)
        .collect();
    check_unique(path, &names)?;
    let keep: Vec<bool> = names.iter().map(|n| wanted(n)).collect();
    let mut columns: Vec<Option<Vec<String>>> = keep
        .iter()
        .map(|&k| if k { Some(Vec::new()) } else { None })
        .collect();
    let mut record = csv::StringRecord::new();
    let mut row = 1u64;
    while reader.read_record(&mut record).map_err(csv_err)? {
        row += 1;
        if record.len() != names.len() {
            return Err(TableError::RowLength {
                path: path.to_path_buf(),
                row,
                found: record.len(),
                expected: names.len(),
            });
        }
        for (cell, column) in record.iter().zip(columns.iter_mut()) {
            if let Some(column) = column
                && !MISSING.contains(&cell)
            {
                column.push(cell.to_string());
            }
        }
    }
    Ok(Table::Csv {
        path: path.to_path_buf(),
        names,
        columns: Mutex::new(columns),
    })
}

fn read_parquet_column(
    path: &Path,
    reader: &SerializedFileReader<File>,
    index: usize,
    name: &str,
) -> Result<RawColumn, TableError> {
    let err = |source| TableError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let descr = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .column(index);
    let physical = descr.physical_type();
    let rows = reader.metadata().file_metadata().num_rows().max(0) as usize;
    let mut numbers: Vec<f64> = Vec::new();
    let mut text: Vec<String> = Vec::new();
    let numeric = matches!(
        physical,
        PhysicalType::INT32 | PhysicalType::INT64 | PhysicalType::FLOAT | PhysicalType::DOUBLE
    );
    if numeric {
        numbers.reserve(rows);
    }
    for group in 0..reader.num_row_groups() {
        let group_reader = reader.get_row_group(group).map_err(err)?;
        let column = group_reader.get_column_reader(index).map_err(err)?;
        match column {
            ColumnReader::DoubleColumnReader(r) => {
                drain(r, |v: f64| numbers.push(v)).map_err(err)?
            }
            ColumnReader::FloatColumnReader(r) => {
                drain(r, |v: f32| numbers.push(f64::from(v))).map_err(err)?
            }
            ColumnReader::Int32ColumnReader(r) => {
                drain(r, |v: i32| numbers.push(f64::from(v))).map_err(err)?
            }
            ColumnReader::Int64ColumnReader(r) => {
                drain(r, |v: i64| numbers.push(v as f64)).map_err(err)?
            }
            ColumnReader::BoolColumnReader(r) => {
                drain(r, |v: bool| text.push(v.to_string())).map_err(err)?
            }
            ColumnReader::ByteArrayColumnReader(r) => {
                drain(r, |v: parquet::data_type::ByteArray| {
                    text.push(String::from_utf8_lossy(v.data()).into_owned())
                })
                .map_err(err)?
            }
            ColumnReader::Int96ColumnReader(_) | ColumnReader::FixedLenByteArrayColumnReader(_) => {
                return Err(TableError::UnsupportedType {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                    kind: physical.to_string(),
                });
            }
        }
    }
    if numeric {
        numbers.retain(|v| !v.is_nan());
        Ok(RawColumn::Numbers(numbers))
    } else {
        Ok(RawColumn::Text(text))
    }
}

/// Reads every non-null value of one column chunk into `push`, in batches.
fn drain<T: DataType>(
    mut reader: ColumnReaderImpl<T>,
    mut push: impl FnMut(T::T),
) -> parquet::errors::Result<()>
where
    T::T: Clone,
{
    const BATCH: usize = 64 * 1024;
    let mut values: Vec<T::T> = Vec::with_capacity(BATCH);
    let mut levels: Vec<i16> = Vec::with_capacity(BATCH);
    loop {
        values.clear();
        levels.clear();
        let (records, _, _) = reader.read_records(BATCH, Some(&mut levels), None, &mut values)?;
        if records == 0 {
            return Ok(());
        }
        values.drain(..).for_each(&mut push);
    }
}

/// The numbers in a text column when every cell parses as one (missing cells already out).
pub fn parse_numbers(cells: &[String]) -> Option<Vec<f64>> {
    let mut numbers = Vec::with_capacity(cells.len());
    for cell in cells {
        let value: f64 = cell.trim().parse().ok()?;
        if !value.is_nan() {
            numbers.push(value);
        }
    }
    Some(numbers)
}
