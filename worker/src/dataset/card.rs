//! The dataset card: what the data looks like, per split. Training normalizes with the train
//! split's per-channel mean and std; drift detection compares live inputs with its histograms.

use serde::{Deserialize, Serialize};

use super::shard::ImageShape;

/// `card.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetCard {
    pub classes: Vec<String>,
    pub image: ImageShape,
    pub splits: Vec<SplitStats>,
}

impl DatasetCard {
    pub fn split(&self, name: &str) -> Option<&SplitStats> {
        self.splits.iter().find(|s| s.name == name)
    }
}

/// Statistics of one split. Pixel values are scaled to [0, 1] for mean and std; histograms
/// count raw u8 values (256 bins per channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitStats {
    pub name: String,
    pub records: u64,
    /// Indexed by class.
    pub class_counts: Vec<u64>,
    pub channels: Vec<ChannelStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub mean: f64,
    pub std: f64,
    pub histogram: Vec<u64>,
}

impl SplitStats {
    /// Computes the statistics of records given as labels and HWC pixels.
    pub fn compute(
        name: &str,
        shape: ImageShape,
        classes: usize,
        labels: &[u16],
        pixels: &[u8],
    ) -> SplitStats {
        let mut class_counts = vec![0u64; classes];
        for &l in labels {
            if let Some(c) = class_counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        let channels = shape.channels as usize;
        let mut histograms = vec![vec![0u64; 256]; channels];
        for (i, &p) in pixels.iter().enumerate() {
            histograms[i % channels][p as usize] += 1;
        }
        // Mean and std from the histogram: exact, and no float accumulation over every pixel.
        let channels = histograms
            .into_iter()
            .map(|histogram| {
                let n: u64 = histogram.iter().sum();
                let (mut sum, mut sum_sq) = (0f64, 0f64);
                for (v, &count) in histogram.iter().enumerate() {
                    let x = v as f64 / 255.0;
                    sum += x * count as f64;
                    sum_sq += x * x * count as f64;
                }
                let (mean, std) = if n == 0 {
                    (0.0, 0.0)
                } else {
                    let mean = sum / n as f64;
                    (mean, (sum_sq / n as f64 - mean * mean).max(0.0).sqrt())
                };
                ChannelStats {
                    mean,
                    std,
                    histogram,
                }
            })
            .collect();
        SplitStats {
            name: name.to_string(),
            records: labels.len() as u64,
            class_counts,
            channels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_classes_and_channel_moments() {
        let shape = ImageShape {
            height: 1,
            width: 2,
            channels: 2,
        };
        // Two records; channel 0 sees 0, 255, 0, 255 and channel 1 sees 51 four times.
        let pixels = [0, 51, 255, 51, 0, 51, 255, 51];
        let stats = SplitStats::compute("train", shape, 3, &[2, 2], &pixels);
        assert_eq!(stats.class_counts, vec![0, 0, 2]);
        assert!((stats.channels[0].mean - 0.5).abs() < 1e-12);
        assert!((stats.channels[0].std - 0.5).abs() < 1e-12);
        assert!((stats.channels[1].mean - 0.2).abs() < 1e-12);
        assert!(stats.channels[1].std.abs() < 1e-6);
        assert_eq!(stats.channels[1].histogram[51], 4);
    }
}
