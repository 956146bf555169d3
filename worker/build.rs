//! With the `torch` feature, records where libtorch lives in the binaries' run-time search path
//! (RUNPATH), so `toucan-worker` starts without `LD_LIBRARY_PATH`.
//!
//! torch-sys finds libtorch (with `LIBTORCH_USE_PYTORCH=1`, in the PyTorch of the active
//! Python) and exports the directory as `DEP_TCH_LIBTORCH_LIB`. Two entries are written:
//!
//! 1. `$ORIGIN/<relative path>` from the directory of the binary to that directory, one for the
//!    binaries in `target/<profile>/` and one for the test binaries in `target/<profile>/deps/`:
//!    these keep working when the whole repository (target and .venv together) is moved or
//!    mounted elsewhere.
//! 2. The absolute directory: keeps working when the binary alone is copied elsewhere on the
//!    same machine.
//!
//! A binary shipped to another machine (a container image) finds libtorch through neither and
//! must bring it along, e.g. next to the binary in `lib/` — `$ORIGIN/lib` is listed first for
//! that layout.
//!
//! It also keeps `libtorch_cuda.so` linked (see below), or libtorch would never see a GPU, and
//! compiles the bridge to libtorch's collectives (`csrc/c10d_bridge.cpp`, see
//! `src/collectives.rs`) and, when the wheel has CUDA, the NCCL library the bridge opens for
//! groups on CUDA devices (`csrc/c10d_nccl.cpp`, `libtoucan_c10d_nccl.so` in the build's out
//! directory; images put it next to libtorch).
//!
//! Also with `torch`, compiles the Open Inference Protocol's gRPC service
//! (`proto/grpc_predict_v2.proto`, for `toucan-worker serve`) into Rust with protox, a protobuf
//! compiler in Rust, so no `protoc` binary is needed, and tonic-prost-build.

use std::path::{Component, Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    if let Err(e) = compile_inference_protocol() {
        eprintln!("error: compiling the inference protocol: {e}");
        std::process::exit(1);
    }
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        println!("cargo:warning=torch-sys did not export DEP_TCH_LIBTORCH_LIB; no rpath set");
        return;
    };
    let mut entries = vec!["$ORIGIN/lib".to_string()];
    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out.
    if let Some(profile_dir) = std::env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .and_then(|out| out.ancestors().nth(3).map(Path::to_path_buf))
    {
        for bin_dir in [profile_dir.clone(), profile_dir.join("deps")] {
            if let Some(rel) = relative(&bin_dir, &lib) {
                entries.push(format!("$ORIGIN/{}", rel.display()));
            }
        }
    }
    entries.push(lib.display().to_string());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", entries.join(":"));
    // torch-sys asks for libtorch_cuda, but nothing references its symbols, so the linker's
    // --as-needed (rustc's default) drops it and libtorch never registers CUDA: `--device auto`
    // would never see a GPU. Keep it explicitly when the wheel has it, in `toucan-worker` only:
    // `toucan-launcher` references no libtorch symbol, so --as-needed leaves libtorch out of it.
    if lib.join("libtorch_cuda.so").exists() {
        println!(
            "cargo:rustc-link-arg-bin=toucan-worker=-Wl,--no-as-needed,-ltorch_cuda,--as-needed"
        );
    }
    println!("cargo:rustc-env=TOUCAN_LIBTORCH_LIB={}", lib.display());
    if let Err(e) = build_c10d_bridge(&lib) {
        eprintln!("error: building the c10d bridge: {e}");
        std::process::exit(1);
    }
}

/// Generates the messages, client and server of `inference.GRPCInferenceService` into OUT_DIR
/// (`inference.rs`, included by `src/serve/grpc.rs`).
#[cfg(feature = "torch")]
fn compile_inference_protocol() -> Result<(), String> {
    const PROTO: &str = "proto/grpc_predict_v2.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"]).map_err(|e| e.to_string())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)
        .map_err(|e| format!("{PROTO}: {e}"))
}

#[cfg(not(feature = "torch"))]
fn compile_inference_protocol() -> Result<(), String> {
    Ok(())
}

/// Compiles the c10d bridge against the headers of the libtorch in `lib` and Debian's Gloo
/// headers (libgloo-dev, which the wheel lacks), as a static library linked before libtorch.
/// The torch headers take a while to compile, so the library is reused while the source, the
/// libtorch and the compiler are unchanged: this script runs again in every clone that shares
/// the target directory.
fn build_c10d_bridge(lib: &Path) -> Result<(), String> {
    const SOURCE: &str = "csrc/c10d_bridge.cpp";
    const NAME: &str = "toucan_c10d_bridge";
    println!("cargo:rerun-if-changed={SOURCE}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let include = lib
        .parent()
        .ok_or("libtorch's lib has no parent")?
        .join("include");
    let header = include.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp");
    if !header.is_file() {
        return Err(format!("{} is missing", header.display()));
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .define("USE_C10D_GLOO", None)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .file(SOURCE)
        // The torch headers warn about themselves.
        .warnings(false)
        .flag("-w");
    if let Some(nccl) = build_nccl_library(lib, &include, &out, &build)? {
        build.define(
            "TOUCAN_NCCL_LIBRARY",
            format!("{:?}", nccl.display().to_string()).as_str(),
        );
    }
    let compiler = build.get_compiler();
    let gloo = [
        "/usr/include/gloo/config.h",
        "/usr/local/include/gloo/config.h",
    ];
    if !gloo.iter().any(|p| Path::new(p).is_file()) {
        return Err(
            "Gloo's headers (gloo/config.h) are missing: install libgloo-dev (scripts/setup)"
                .into(),
        );
    }
    let source = std::fs::read(SOURCE).map_err(|e| format!("{SOURCE}: {e}"))?;
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        source.hash(&mut h);
        include.hash(&mut h);
        compiler.path().hash(&mut h);
        compiler.args().hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let archive = out.join(format!("lib{NAME}.a"));
    let stamp = out.join(format!("{NAME}.key"));
    if archive.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|k| k == key) {
        // What cc prints for a static C++ library.
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=static={NAME}");
        println!("cargo:rustc-link-lib=stdc++");
        return Ok(());
    }
    build.try_compile(NAME).map_err(|e| e.to_string())?;
    std::fs::write(&stamp, key).map_err(|e| format!("{}: {e}", stamp.display()))
}

/// Builds the NCCL library the bridge opens for CUDA groups (`csrc/c10d_nccl.cpp`) into `out`,
/// when the wheel in `lib` has CUDA and its NCCL and CUDA runtime packages bring their
/// headers; `None` otherwise (the bridge then reports NCCL as unavailable). Reused while the
/// source, the libtorch and the compiler are unchanged, as the bridge is.
fn build_nccl_library(
    lib: &Path,
    include: &Path,
    out: &Path,
    bridge: &cc::Build,
) -> Result<Option<PathBuf>, String> {
    const SOURCE: &str = "csrc/c10d_nccl.cpp";
    const FILE: &str = "libtoucan_c10d_nccl.so";
    println!("cargo:rerun-if-changed={SOURCE}");
    if !lib.join("libtorch_cuda.so").exists()
        || !include
            .join("torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp")
            .is_file()
    {
        return Ok(None);
    }
    // The nvidia-* packages sit next to torch in site-packages.
    let nvidia = lib
        .ancestors()
        .nth(2)
        .ok_or("libtorch's lib is not inside site-packages/torch")?
        .join("nvidia");
    let header_dir = |name: &str| -> Option<PathBuf> {
        std::fs::read_dir(&nvidia)
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("include"))
            .find(|dir| dir.join(name).is_file())
    };
    let (Some(nccl), Some(cuda)) = (header_dir("nccl.h"), header_dir("cuda_runtime_api.h")) else {
        println!(
            "cargo:warning=no NCCL or CUDA runtime headers under {}: toucan-worker trains on CUDA with Gloo only",
            nvidia.display()
        );
        return Ok(None);
    };
    let compiler = bridge.get_compiler();
    let mut command = compiler.to_command();
    command
        .args(["-shared", "-fPIC", "-w", "-DUSE_C10D_NCCL", "-DUSE_CUDA"])
        .arg(format!("-I{}", include.display()))
        .arg(format!(
            "-I{}",
            include.join("torch/csrc/api/include").display()
        ))
        .arg(format!("-I{}", nccl.display()))
        .arg(format!("-I{}", cuda.display()))
        .arg(SOURCE)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,$ORIGIN:{}", lib.display()))
        .args(["-ltorch_cuda", "-ltorch_cpu", "-lc10_cuda", "-lc10"]);
    let library = out.join(FILE);
    let source = std::fs::read(SOURCE).map_err(|e| format!("{SOURCE}: {e}"))?;
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        source.hash(&mut h);
        format!("{command:?}").hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let stamp = out.join(format!("{FILE}.key"));
    if library.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|k| k == key) {
        return Ok(Some(library));
    }
    let output = command
        .arg("-o")
        .arg(&library)
        .output()
        .map_err(|e| format!("running {}: {e}", compiler.path().display()))?;
    if !output.status.success() {
        return Err(format!(
            "compiling {SOURCE}: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::write(&stamp, key).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(Some(library))
}

/// The path from directory `from` to `to`, both absolute.
fn relative(from: &Path, to: &Path) -> Option<PathBuf> {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    if from.first() != to.first() {
        return None;
    }
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c.as_os_str());
    }
    Some(rel)
}
