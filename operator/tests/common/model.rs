//! A tiny image classifier made once per test binary with the real `toucan-worker`: three
//! classes of 12x12 grey images (a bright bar in the top, middle or bottom third), ingested,
//! trained as a linear model for ten epochs and exported; and the same trained on shuffled
//! labels.

use std::process::Command;
use std::sync::OnceLock;

use super::bin_dir;

/// The model's input: a 12x12 grey image, as a flat list of pixels.
pub const SIDE: usize = 12;

/// The exported model's bytes, made once for every test of the binary.
pub fn model_bytes() -> &'static [u8] {
    static MODEL: OnceLock<Vec<u8>> = OnceLock::new();
    MODEL.get_or_init(|| train(false))
}

/// A model of the same kind trained on the same images with their labels shuffled: about as
/// good as chance.
pub fn shuffled_model_bytes() -> &'static [u8] {
    static MODEL: OnceLock<Vec<u8>> = OnceLock::new();
    MODEL.get_or_init(|| train(true))
}

/// 150 images, ten epochs of a linear model; with `shuffled`, each image gets a label drawn
/// from a hash of its index, whatever its bar.
fn train(shuffled: bool) -> Vec<u8> {
    {
        let dir = tempfile::Builder::new()
            .prefix("toucan-ep-model-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let source = dir.path().join("source");
        std::fs::create_dir_all(&source).unwrap();
        let n = 150u32;
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let label = i % 3;
            // Knuth's multiplicative hash: labels that no longer follow the bars.
            let given = if shuffled {
                (i.wrapping_mul(2_654_435_761) >> 13) % 3
            } else {
                label
            };
            labels.push(given as u8);
            images.extend(bar(label as usize, i));
        }
        let idx = |dims: &[u32], values: &[u8]| {
            let mut out = vec![0, 0, 0x08, dims.len() as u8];
            for d in dims {
                out.extend_from_slice(&d.to_be_bytes());
            }
            out.extend_from_slice(values);
            out
        };
        std::fs::write(
            source.join("train-images-idx3-ubyte"),
            idx(&[n, SIDE as u32, SIDE as u32], &images),
        )
        .unwrap();
        std::fs::write(source.join("train-labels-idx1-ubyte"), idx(&[n], &labels)).unwrap();
        let data = dir.path().join("dataset");
        let trained = dir.path().join("trained");
        let model = dir.path().join("model.safetensors");
        let steps: [Vec<&std::ffi::OsStr>; 3] = [
            vec![
                "ingest".as_ref(),
                "--source".as_ref(),
                source.as_os_str(),
                "--out".as_ref(),
                data.as_os_str(),
                "--class-names".as_ref(),
                "top,middle,bottom".as_ref(),
            ],
            vec![
                "train".as_ref(),
                "--data".as_ref(),
                data.as_os_str(),
                "--out".as_ref(),
                trained.as_os_str(),
                "--model".as_ref(),
                "linear".as_ref(),
                "--epochs".as_ref(),
                "10".as_ref(),
                "--device".as_ref(),
                "cpu".as_ref(),
                "--threads".as_ref(),
                "1".as_ref(),
            ],
            vec![
                "export".as_ref(),
                "--model".as_ref(),
                trained.as_os_str(),
                "--out".as_ref(),
                model.as_os_str(),
            ],
        ];
        for args in steps {
            let out = Command::new(bin_dir().join("toucan-worker"))
                .args(&args)
                .env_remove("LD_LIBRARY_PATH")
                .env_remove("TOUCAN_API")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "toucan-worker {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::read(&model).unwrap()
    }
}

/// The class names, by label.
pub const CLASSES: [&str; 3] = ["top", "middle", "bottom"];

/// An image of class `label` as a flat list of pixels; `variant` varies the noise.
pub fn bar(label: usize, variant: u32) -> Vec<u8> {
    let mut pixels = Vec::with_capacity(SIDE * SIDE);
    for y in 0..SIDE as u32 {
        for x in 0..SIDE as u32 {
            let noise = ((variant * 31 + y * 7 + x * 13) % 60) as u8;
            pixels.push(if (y / 4) as usize == label {
                150 + noise
            } else {
                noise
            });
        }
    }
    pixels
}
