//! `reference.json`: the drift reference of a dataset, what continuous evaluation compares an
//! endpoint's sampled inputs with. A JSON array of [`ReferenceRow`]s, one per sampled record of
//! the train split:
//!
//! ```json
//! [{"stats": {"width": 28, "height": 28, "channels": 1, "brightness": 0.28, "contrast": 0.35,
//!             "channelMeans": [0.28], "sharpness": 0.07},
//!   "class": "Ankle boot"}]
//! ```
//!
//! `stats` are [`crate::stats::pixel_stats`] of the record's pixels scaled to `[0, 1]`, at the
//! dataset's image shape; `class` is the name of the record's label. Rows have no attributes.
//!
//! The statistics are those of the images as ingested, after `--resize` and `--channels`,
//! whereas a model server measures an image as the client sent it: `width` and `height` only
//! compare when clients send images at the dataset's size.
//!
//! A split of more than [`MAX_REFERENCE_ROWS`] records is subsampled evenly
//! ([`sampled_records`]), so the reference covers the whole split and the same dataset always
//! gives the same rows.

use toucan_core::monitoring::assess::ReferenceRow;

use super::ImageShape;
use crate::stats::pixel_stats;

/// The most rows a reference holds: enough for the drift tests to see a shift in a window of a
/// few hundred samples, small enough to read on every monitoring pass.
pub const MAX_REFERENCE_ROWS: usize = 2_000;

/// The records of a split of `records` that the reference takes, in order: every one when
/// there are at most `max`, else exactly `max` evenly spaced ones, row `i` being record
/// `⌊i · records / max⌋` (the first is record 0, and consecutive rows are `⌊records / max⌋` or
/// `⌈records / max⌉` records apart).
pub fn sampled_records(records: usize, max: usize) -> Vec<usize> {
    if records <= max {
        return (0..records).collect();
    }
    (0..max)
        .map(|i| (i as u128 * records as u128 / max as u128) as usize)
        .collect()
}

/// The reference rows of a split: `labels` and its HWC u8 `pixels` back to back, as in
/// [`super::SplitData`]. A label without a name in `classes` (which ingest never writes) is
/// named by its number.
pub fn rows(
    shape: ImageShape,
    classes: &[String],
    labels: &[u16],
    pixels: &[u8],
) -> Vec<ReferenceRow> {
    let per_image = shape.pixels();
    sampled_records(labels.len(), MAX_REFERENCE_ROWS)
        .into_iter()
        .map(|i| {
            let image = &pixels[i * per_image..(i + 1) * per_image];
            let unit: Vec<f32> = image.iter().map(|&p| f32::from(p) / 255.0).collect();
            let label = labels[i];
            ReferenceRow {
                stats: pixel_stats(&unit, shape.width, shape.height, shape.channels),
                class: classes
                    .get(usize::from(label))
                    .cloned()
                    .unwrap_or_else(|| label.to_string()),
                attributes: Default::default(),
                version: None,
                embedding: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_split_within_the_limit_is_taken_whole() {
        assert_eq!(sampled_records(0, 4), Vec::<usize>::new());
        assert_eq!(sampled_records(4, 4), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_larger_split_is_taken_every_kth_record() {
        assert_eq!(sampled_records(12, 4), vec![0, 3, 6, 9]);
        assert_eq!(sampled_records(10, 4), vec![0, 2, 5, 7]);
    }

    #[test]
    fn rows_measure_each_record_and_name_its_class() {
        let shape = ImageShape {
            height: 2,
            width: 3,
            channels: 1,
        };
        let classes = vec!["black".to_string(), "white".to_string()];
        let pixels: Vec<u8> = [[0u8; 6], [255u8; 6]].concat();
        let rows = rows(shape, &classes, &[0, 1], &pixels);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].class, "black");
        assert_eq!(rows[1].class, "white");
        let white = &rows[1].stats;
        assert_eq!((white.width, white.height, white.channels), (3, 2, 1));
        assert_eq!((white.brightness, white.contrast), (1.0, 0.0));
        assert!(rows[1].attributes.is_empty());
    }

    proptest! {
        #[test]
        fn samples_are_min_of_records_and_max_increasing_and_cover_the_split(
            records in 0usize..50_000,
            max in 1usize..3_000,
        ) {
            let picked = sampled_records(records, max);
            prop_assert_eq!(picked.len(), records.min(max));
            prop_assert!(picked.windows(2).all(|w| w[0] < w[1]));
            if let (Some(&first), Some(&last)) = (picked.first(), picked.last()) {
                prop_assert_eq!(first, 0);
                prop_assert!(last < records);
                // The last row is within one stride of the end.
                prop_assert!(records - last <= records.div_ceil(max));
            }
            let (low, high) = (records / max, records.div_ceil(max));
            if records > max {
                prop_assert!(picked.windows(2).all(|w| (low..=high).contains(&(w[1] - w[0]))));
            }
        }
    }
}
