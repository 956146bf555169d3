//! The Fashion-MNIST classifier the endpoint tests serve, made once per test binary with the
//! real `toucan-worker`: the first [`TRAIN_IMAGES`] training images of the Debian package,
//! ingested, trained as a linear model for three epochs and exported (with the reference
//! embeddings training writes); and the same trained on shuffled labels. Requests send the
//! package's test images.

use std::io::Read;
use std::process::Command;
use std::sync::OnceLock;

use super::bin_dir;

/// The model's input: a 28x28 grey image, as a flat list of pixels.
pub const SIDE: usize = 28;
/// How many training images the models learn from.
pub const TRAIN_IMAGES: usize = 3_000;
/// Where the Debian package puts the dataset.
const FASHION: &str = "/usr/share/datasets/fashion-mnist";

/// The class names, by label.
pub const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

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

/// A split of the package: its images (28x28 each, back to back) and labels.
struct Split {
    images: Vec<u8>,
    labels: Vec<u8>,
}

/// The body of a gzipped IDX file (after its header of `dims` sizes).
fn idx_body(file: &str, dims: usize) -> Vec<u8> {
    let path = format!("{FASHION}/{file}");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap_or_else(|e| {
        panic!("{path}: {e} (the apt package dataset-fashion-mnist provides it)")
    }))
    .read_to_end(&mut bytes)
    .unwrap();
    bytes.split_off(4 + 4 * dims)
}

fn split(name: &str) -> Split {
    Split {
        images: idx_body(&format!("{name}-images-idx3-ubyte.gz"), 3),
        labels: idx_body(&format!("{name}-labels-idx1-ubyte.gz"), 1),
    }
}

/// Test image `index` (modulo the split) and its label.
pub fn test_image(index: u32) -> (Vec<u8>, usize) {
    static TEST: OnceLock<Split> = OnceLock::new();
    let test = TEST.get_or_init(|| split("t10k"));
    let i = index as usize % test.labels.len();
    let pixels = test.images[i * SIDE * SIDE..(i + 1) * SIDE * SIDE].to_vec();
    (pixels, usize::from(test.labels[i]))
}

/// [`TRAIN_IMAGES`] images, three epochs of a linear model; with `shuffled`, each image gets
/// a label drawn from a hash of its index, whatever it shows.
fn train(shuffled: bool) -> Vec<u8> {
    {
        let dir = tempfile::Builder::new()
            .prefix("toucan-ep-model-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let source = dir.path().join("source");
        std::fs::create_dir_all(&source).unwrap();
        let all = split("train");
        let n = TRAIN_IMAGES as u32;
        let images = all.images[..TRAIN_IMAGES * SIDE * SIDE].to_vec();
        let labels: Vec<u8> = (0..n)
            .map(|i| {
                if shuffled {
                    // Knuth's multiplicative hash: labels that no longer follow the images.
                    ((i.wrapping_mul(2_654_435_761) >> 13) % 10) as u8
                } else {
                    all.labels[i as usize]
                }
            })
            .collect();
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
        let class_names = CLASSES.join(",");
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
                class_names.as_ref(),
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
                "3".as_ref(),
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
