//! IDX files (the MNIST format): a big-endian header — two zero bytes, a type code, the number
//! of dimensions, one u32 per dimension — then the values. Files may be gzip-compressed
//! (detected by the gzip magic, not the name). Only unsigned bytes (type 0x08) occur in MNIST
//! and Fashion-MNIST, and only those are read.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::DatasetError;

const TYPE_U8: u8 = 0x08;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A decoded IDX array of u8 values.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<u32>,
    pub values: Vec<u8>,
}

/// One images file and its labels file, e.g. `train-images-idx3-ubyte.gz` and
/// `train-labels-idx1-ubyte.gz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxPair {
    pub images: PathBuf,
    pub labels: PathBuf,
}

/// Reads the file and returns its raw bytes (for digests) and the decoded array.
pub fn read(path: &Path) -> Result<(Vec<u8>, IdxArray), DatasetError> {
    let raw = std::fs::read(path).map_err(DatasetError::io(path))?;
    let array = decode(&raw).map_err(|m| DatasetError::invalid_file(path, m))?;
    Ok((raw, array))
}

/// Decodes IDX bytes, gunzipping first when they are gzip.
pub fn decode(raw: &[u8]) -> Result<IdxArray, String> {
    let bytes = if raw.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw)
            .read_to_end(&mut out)
            .map_err(|e| format!("corrupt gzip stream: {e}"))?;
        out
    } else {
        raw.to_vec()
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (bad magic: the first two bytes must be zero)".into());
    }
    if bytes[2] != TYPE_U8 {
        return Err(format!(
            "IDX type code 0x{:02x} is not supported (only 0x08, unsigned bytes)",
            bytes[2]
        ));
    }
    let ndims = bytes[3] as usize;
    let header_len = 4 + 4 * ndims;
    if ndims == 0 || bytes.len() < header_len {
        return Err(format!(
            "truncated header: {ndims} dimensions need {header_len} bytes, the file has {}",
            bytes.len()
        ));
    }
    let dims: Vec<u32> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
    let found = bytes.len() - header_len;
    match expected {
        Some(n) if n == found => {}
        Some(n) if n > found => {
            return Err(format!(
                "truncated: the header's dimensions {dims:?} need {n} bytes of data, found {found}"
            ));
        }
        Some(n) => {
            return Err(format!(
                "{} unexpected bytes after the {n} bytes of data that the dimensions {dims:?} describe",
                found - n
            ));
        }
        None => return Err(format!("dimensions {dims:?} overflow")),
    }
    Ok(IdxArray {
        dims,
        values: bytes[header_len..].to_vec(),
    })
}

/// Finds the `PREFIX-images-idx3-ubyte[.gz]` files in `dir` and pairs each with its
/// `PREFIX-labels-idx1-ubyte[.gz]`, sorted by file name.
pub fn find_pairs(dir: &Path) -> Result<Vec<IdxPair>, DatasetError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DatasetError::InvalidSource {
                dir: dir.to_path_buf(),
                message: "no such directory".into(),
            });
        }
        Err(e) => return Err(DatasetError::io(dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(DatasetError::io(dir))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    let mut pairs = Vec::new();
    for name in &names {
        let Some(idx) = name.find("images-idx3-ubyte") else {
            continue;
        };
        let labels_name = format!(
            "{}labels-idx1-ubyte{}",
            &name[..idx],
            &name[idx + "images-idx3-ubyte".len()..]
        );
        if !names.contains(&labels_name) {
            return Err(DatasetError::InvalidSource {
                dir: dir.to_path_buf(),
                message: format!("{name} has no labels file: expected {labels_name} next to it"),
            });
        }
        pairs.push(IdxPair {
            images: dir.join(name),
            labels: dir.join(labels_name),
        });
    }
    if pairs.is_empty() {
        return Err(DatasetError::InvalidSource {
            dir: dir.to_path_buf(),
            message: "no IDX image files (*images-idx3-ubyte or *images-idx3-ubyte.gz)".into(),
        });
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], values: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, TYPE_U8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(values);
        out
    }

    #[test]
    fn decodes_plain_and_gzip() {
        let raw = idx(&[2, 2], &[1, 2, 3, 4]);
        let want = IdxArray {
            dims: vec![2, 2],
            values: vec![1, 2, 3, 4],
        };
        assert_eq!(decode(&raw).unwrap(), want);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        assert_eq!(decode(&gz.finish().unwrap()).unwrap(), want);
    }

    #[test]
    fn says_what_is_wrong() {
        let cases: &[(Vec<u8>, &str)] = &[
            (b"\x1f\x8b garbage".to_vec(), "corrupt gzip"),
            (b"PNG....".to_vec(), "bad magic"),
            (
                vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0],
                "type code 0x0d",
            ),
            (vec![0, 0, 8, 3, 0, 0], "truncated header"),
            (idx(&[3, 2], &[0; 5]), "need 6 bytes of data, found 5"),
            (idx(&[1], &[0; 2]), "1 unexpected bytes"),
        ];
        for (raw, want) in cases {
            let err = decode(raw).unwrap_err();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}
