//! Record shards: fixed-shape u8 images with u16 labels, stored column-wise so that a reader
//! turns a shard into two tensors with two copies.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! offset  size          field
//! 0       8             magic b"TCNSHRD1" (the 1 is the format version)
//! 8       4             records N
//! 12      4             height H
//! 16      4             width W
//! 20      4             channels C
//! 24      8             reserved, zero
//! 32      2*N           labels, u16 each
//! 32+2N   N*H*W*C       pixels, u8, record after record, each in HWC order
//! ```
//!
//! Nothing follows the pixels. The file's SHA-256 is recorded in the dataset's index.
//! A hand-written format because the needs are tiny (fixed shapes, one dtype) and every reader
//! here is ours; TFRecord or Arrow would add a dependency and a copy for no gain.

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"TCNSHRD1";
pub const HEADER_LEN: usize = 32;

/// The shape of every image in a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    pub height: u32,
    pub width: u32,
    pub channels: u32,
}

impl ImageShape {
    /// Values per image.
    pub fn pixels(&self) -> usize {
        self.height as usize * self.width as usize * self.channels as usize
    }
}

/// One decoded shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub shape: ImageShape,
    pub labels: Vec<u16>,
    pub pixels: Vec<u8>,
}

impl Shard {
    pub fn encode(shape: ImageShape, labels: &[u16], pixels: &[u8]) -> Vec<u8> {
        debug_assert_eq!(labels.len() * shape.pixels(), pixels.len());
        let mut out = Vec::with_capacity(HEADER_LEN + labels.len() * 2 + pixels.len());
        out.extend_from_slice(MAGIC);
        for v in [
            labels.len() as u32,
            shape.height,
            shape.width,
            shape.channels,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[0; 8]);
        for l in labels {
            out.extend_from_slice(&l.to_le_bytes());
        }
        out.extend_from_slice(pixels);
        out
    }

    /// Decodes a shard; the error says what is wrong with the bytes (the caller adds the path).
    pub fn decode(bytes: &[u8]) -> Result<Shard, String> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err("not a toucan record shard (bad magic)".into());
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let records = u32_at(8) as usize;
        let shape = ImageShape {
            height: u32_at(12),
            width: u32_at(16),
            channels: u32_at(20),
        };
        let expected = records
            .checked_mul(shape.pixels())
            .and_then(|p| p.checked_add(HEADER_LEN + 2 * records));
        if expected != Some(bytes.len()) {
            return Err(format!(
                "{} bytes, but the header ({records} records of {}x{}x{}) needs {}",
                bytes.len(),
                shape.height,
                shape.width,
                shape.channels,
                expected.map_or_else(|| "more than addressable".into(), |n| n.to_string())
            ));
        }
        let label_end = HEADER_LEN + 2 * records;
        let labels = bytes[HEADER_LEN..label_end]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(Shard {
            shape,
            labels,
            pixels: bytes[label_end..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: ImageShape = ImageShape {
        height: 2,
        width: 3,
        channels: 1,
    };

    #[test]
    fn round_trips() {
        let pixels: Vec<u8> = (0..12).collect();
        let bytes = Shard::encode(SHAPE, &[7, 300], &pixels);
        assert_eq!(bytes.len(), HEADER_LEN + 4 + 12);
        let shard = Shard::decode(&bytes).unwrap();
        assert_eq!(shard.labels, vec![7, 300]);
        assert_eq!(shard.pixels, pixels);
        assert_eq!(shard.shape, SHAPE);
    }

    #[test]
    fn rejects_truncated_and_foreign_bytes() {
        let bytes = Shard::encode(SHAPE, &[1], &[0; 6]);
        let err = Shard::decode(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("needs 40"), "{err}");
        assert!(
            Shard::decode(b"PK\x03\x04 not a shard at all....")
                .unwrap_err()
                .contains("magic")
        );
    }
}
