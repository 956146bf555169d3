//! The fashion-mnist example on the real data: it succeeds, learns, exports, and a second
//! run is served entirely from the cache. Needs `python3` with numpy on PATH and Debian's
//! `dataset-fashion-mnist` (both installed by `scripts/setup`; `make test` sets PATH).

mod common;

use common::{Sandbox, cached, step};

#[test]
fn fashion_mnist_example_runs_then_comes_from_the_cache() {
    let sb = Sandbox::new();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/fashion-mnist/pipeline.yaml")
        .canonicalize()
        .unwrap();
    let (code, first, stderr) = sb.run_json(&manifest, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(first["phase"], "Succeeded");
    let accuracy: f64 = step(&first, "evaluate")["outputs"]["params"]["accuracy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(accuracy > 0.83, "test accuracy {accuracy}");
    assert_eq!(
        step(&first, "export")["phase"],
        "Succeeded",
        "accuracy clears the gate"
    );
    assert_eq!(step(&first, "summary")["phase"], "Succeeded");

    let (code, second, stderr) = sb.run_json(&manifest, &[]);
    assert_eq!(code, 0, "{stderr}");
    for s in second["steps"].as_array().unwrap() {
        assert_eq!(s["cached"], true, "{s:#}");
    }

    // Raising the bar above the achieved accuracy skips only the export: the gate is
    // evaluated on cached outputs, the rest hits.
    let (code, third, _) = sb.run_json(&manifest, &["-p", "min_accuracy=0.99"]);
    assert_eq!(code, 0);
    assert_eq!(step(&third, "export")["phase"], "Skipped");
    assert!(cached(&third, "train"));
}
