//! Which device to compute on, and what libtorch reports about itself.

use tch::Device;

use super::MlError;

/// `--device`: `auto` takes the first GPU when libtorch sees one, else the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

impl DeviceChoice {
    pub fn resolve(self) -> Result<Device, MlError> {
        match self {
            DeviceChoice::Auto => Ok(Device::cuda_if_available()),
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceChoice::Cuda => Err(MlError::InvalidArgument(
                "--device cuda, but libtorch sees no CUDA device".into(),
            )),
        }
    }
}

pub fn name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The JSON that `toucan-worker device` prints. Computing a small product on the selected
/// device proves that libtorch was loaded and works, not only that it linked.
pub fn report(choice: DeviceChoice) -> Result<serde_json::Value, MlError> {
    let device = choice.resolve()?;
    let product = tch::Tensor::ones([2, 3], (tch::Kind::Float, device))
        .f_matmul(&tch::Tensor::ones([3, 2], (tch::Kind::Float, device)))
        .and_then(|t| t.f_sum(tch::Kind::Float))
        .and_then(|t| t.f_double_value(&[]))
        .map_err(MlError::torch("computing a test product"))?;
    Ok(serde_json::json!({
        "libtorch_lib": option_env!("TOUCAN_LIBTORCH_LIB"),
        "selected": name(device),
        "cpu_threads": tch::get_num_threads(),
        "interop_threads": tch::get_num_interop_threads(),
        "cuda_available": tch::Cuda::is_available(),
        "cuda_devices": tch::Cuda::device_count(),
        "cudnn_available": tch::Cuda::cudnn_is_available(),
        // Whether the CUDA part of libtorch is loaded at all (without it no GPU is ever seen).
        "libtorch_cuda_loaded": libtorch_cuda_loaded(),
        "mkl": tch::utils::has_mkl(),
        "mkldnn": tch::utils::has_mkldnn(),
        "openmp": tch::utils::has_openmp(),
        "test_product_sum": product,
    }))
}

/// Linux: whether `libtorch_cuda.so` is mapped into this process.
fn libtorch_cuda_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|maps| maps.contains("libtorch_cuda.so"))
}
