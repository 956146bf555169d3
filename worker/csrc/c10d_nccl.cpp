// NCCL for the c10d bridge (c10d_bridge.cpp): a shared library the bridge opens only when a
// group trains on CUDA devices. It is separate because libtorch's NCCL process group lives in
// libtorch_cuda: linking it into toucan-worker would make every worker need the CUDA
// libraries, and the CPU image has none. Built by the build script when the PyTorch wheel has
// CUDA, NCCL's header and the CUDA runtime's headers.

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>

extern "C" {

// A NCCL backend for rank `rank` of `size`, meeting the others through `store` (keys under
// "nccl/", apart from Gloo's). Returns an owning pointer for c10::intrusive_ptr::reclaim, or
// nullptr with the reason in err (NUL-terminated, truncated to err_len).
c10d::Backend* toucan_c10d_nccl_backend(c10d::Store* store, int rank, int size,
                                        int64_t timeout_ms, char* err, size_t err_len) {
  try {
    auto shared = c10::intrusive_ptr<c10d::Store>::unsafe_reclaim_from_nonowning(store);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("nccl/", shared);
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = std::chrono::milliseconds(timeout_ms);
    c10::intrusive_ptr<c10d::Backend> backend =
        c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, size, options);
    return backend.release();
  } catch (const c10::Error& e) {
    if (err != nullptr && err_len > 0) {
      std::strncpy(err, e.what_without_backtrace(), err_len - 1);
      err[err_len - 1] = '\0';
    }
  } catch (const std::exception& e) {
    if (err != nullptr && err_len > 0) {
      std::strncpy(err, e.what(), err_len - 1);
      err[err_len - 1] = '\0';
    }
  }
  return nullptr;
}

}  // extern "C"
