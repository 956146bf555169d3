// The bridge between toucan-worker (Rust, through tch) and libtorch's own collectives (c10d): a
// TCPStore rendezvous, a Gloo process group, and DistributedDataParallel's gradient reducer,
// behind a few C functions that src/collectives.rs calls. It uses only c10d's API (store,
// process group, options, work objects, reducer) and never Gloo's own types: the Gloo headers
// it compiles against (Debian's libgloo-dev) are an older snapshot than the Gloo inside
// libtorch.
//
// On CUDA devices the group reduces with NCCL, from a separate shared library the bridge opens
// then (c10d_nccl.cpp): CPU tensors keep going through Gloo.
//
// Every function catches C++ exceptions and reports them as text in `err` (NUL-terminated,
// truncated to `err_len`; c10's errors without their C++ backtrace): none crosses into Rust.

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
  // The group every collective goes through: it hands each one to the backend of its tensors'
  // device (Gloo for CPU, NCCL for CUDA when asked for), as torch.distributed's default group
  // does.
  c10::intrusive_ptr<c10d::ProcessGroup> front;
};

using NcclBackendFn = c10d::Backend* (*)(c10d::Store*, int, int, int64_t, char*, size_t);

// The NCCL backend from the NCCL library: found by name first (next to libtorch in an image),
// then where the build put it.
c10::intrusive_ptr<c10d::Backend> nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                               int rank, int world_size, int64_t timeout_ms) {
  constexpr const char* library = "libtoucan_c10d_nccl.so";
  void* handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  std::string reason = handle == nullptr ? dlerror() : "";
#ifdef TOUCAN_NCCL_LIBRARY
  if (handle == nullptr) {
    handle = dlopen(TOUCAN_NCCL_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) reason = dlerror();
  }
#endif
  TORCH_CHECK(handle != nullptr,
              "NCCL is not available to this toucan-worker (", reason,
              "): it comes with the CUDA image, or a build against a PyTorch with CUDA");
  auto create = reinterpret_cast<NcclBackendFn>(dlsym(handle, "toucan_c10d_nccl_backend"));
  TORCH_CHECK(create != nullptr, library, " lacks toucan_c10d_nccl_backend");
  char err[1024] = {0};
  c10d::Backend* backend = create(store.get(), rank, world_size, timeout_ms, err, sizeof(err));
  TORCH_CHECK(backend != nullptr, "NCCL: ", err);
  return c10::intrusive_ptr<c10d::Backend>::reclaim(backend);
}

void report(char* err, size_t err_len, const char* what) {
  if (err != nullptr && err_len > 0) {
    std::strncpy(err, what, err_len - 1);
    err[err_len - 1] = '\0';
  }
}

// Runs `body` and returns what it returns; a C++ exception instead returns `failed`, with its
// text in err.
template <typename T, typename Body>
T guarded(char* err, size_t err_len, T failed, Body body) {
  try {
    return body();
  } catch (const c10::Error& e) {
    report(err, err_len, e.what_without_backtrace());
  } catch (const std::exception& e) {
    report(err, err_len, e.what());
  }
  return failed;
}

}  // namespace

extern "C" {

// Joins the group: rank 0 serves the store at host:port, the others connect to it; this
// rank's own connections go through the address `local_host` resolves to. With `nccl`, CUDA
// tensors are reduced by NCCL. Returns nullptr (and the reason in err) when the rendezvous
// fails or times out, or NCCL is asked for and unavailable.
void* toucan_c10d_join(const char* host, uint16_t port, const char* local_host, int rank,
                       int world_size, int64_t timeout_ms, int nccl, char* err,
                       size_t err_len) {
  return guarded<void*>(err, err_len, nullptr, [&]() -> void* {
    const auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions store_options;
    store_options.port = port;
    store_options.isServer = rank == 0;
    store_options.numWorkers = world_size;
    store_options.waitWorkers = false;
    store_options.timeout = timeout;
    auto group = std::make_unique<Group>();
    group->store = c10::make_intrusive<c10d::TCPStore>(host, store_options);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(local_host));
    group->gloo =
        c10::make_intrusive<c10d::ProcessGroupGloo>(group->store, rank, world_size, options);
    using Type = c10d::ProcessGroup::BackendType;
    group->front = c10::make_intrusive<c10d::ProcessGroup>(group->store, rank, world_size);
    group->front->setDefaultBackend(Type::GLOO);
    group->front->setBackend(c10::DeviceType::CPU, Type::GLOO, group->gloo);
    if (nccl != 0) {
      group->front->setBackend(c10::DeviceType::CUDA, Type::NCCL,
                               nccl_backend(group->store, rank, world_size, timeout_ms));
    }
    return group.release();
  });
}

// Sums the tensor element-wise across the group, in place; returns 0, or -1 with err set. (A
// list of several tensors means one tensor per device to c10d, so the Rust side buckets.)
int toucan_c10d_all_reduce_sum(void* group, at::Tensor* tensor, char* err, size_t err_len) {
  return guarded(err, err_len, -1, [&] {
    std::vector<at::Tensor> list{*tensor};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    static_cast<Group*>(group)->front->allreduce(list, options)->wait();
    return 0;
  });
}

// Copies rank `root`'s tensor into every rank's, in place; returns 0, or -1 with err set.
int toucan_c10d_broadcast(void* group, at::Tensor* tensor, int root, char* err, size_t err_len) {
  return guarded(err, err_len, -1, [&] {
    std::vector<at::Tensor> list{*tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    static_cast<Group*>(group)->front->broadcast(list, options)->wait();
    return 0;
  });
}

// Waits until every rank has called it; returns 0, or -1 with err set.
int toucan_c10d_barrier(void* group, char* err, size_t err_len) {
  return guarded(err, err_len, -1, [&] {
    static_cast<Group*>(group)->front->barrier()->wait();
    return 0;
  });
}

// DDP's reducer over `count` parameters of one model: while backward runs, each bucket of
// gradients is all-reduced as soon as all of its gradients are ready, and the averages are in
// the parameters' `grad` when backward returns. As DistributedDataParallel does, the first
// step reduces one bucket holding everything and records the order the gradients arrive in;
// the buckets are then rebuilt in that order, the first (the last layers') at most 1 MiB and
// the others at most `bucket_bytes`. Every parameter must get a gradient in every reduced
// step. Returns nullptr, with err set, on failure.
void* toucan_c10d_reducer_new(void* group, at::Tensor* const* params, size_t count,
                              int64_t bucket_bytes, char* err, size_t err_len) {
  return guarded<void*>(err, err_len, nullptr, [&]() -> void* {
    std::vector<at::Tensor> tensors;
    tensors.reserve(count);
    for (size_t i = 0; i < count; ++i) tensors.push_back(*params[i]);
    std::vector<bool> sparse(count, false);
    auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(
        tensors, {std::numeric_limits<size_t>::max()}, sparse);
    std::reverse(buckets.begin(), buckets.end());
    auto reducer = std::make_unique<c10d::Reducer>(
        std::move(tensors), std::move(buckets), static_cast<Group*>(group)->front, sparse,
        bucket_bytes, /*find_unused_parameters=*/false, /*gradient_as_bucket_view=*/false,
        std::unordered_map<size_t, std::string>{}, c10d::kDefaultFirstBucketBytes,
        /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false,
        std::vector<int64_t>{});
    return reducer.release();
  });
}

// Arms the reducer for the next backward pass: call it before the step's forward. Steps that
// skip it keep their gradients local. Returns 0, or -1 with err set.
int toucan_c10d_reducer_prepare(void* reducer, char* err, size_t err_len) {
  return guarded(err, err_len, -1, [&] {
    auto* r = static_cast<c10d::Reducer*>(reducer);
    r->rebuild_buckets();
    r->prepare_for_forward();
    r->prepare_for_backward({});
    return 0;
  });
}

// Removes the reducer's hooks from the parameters and frees it.
void toucan_c10d_reducer_free(void* reducer) {
  try {
    delete static_cast<c10d::Reducer*>(reducer);
  } catch (...) {
    // Its destructor only unhooks; a failure there leaves nothing to undo.
  }
}

// Leaves the group: its backends are shut down before the store it talks through (its
// threads would otherwise still be running when the process exits).
void toucan_c10d_leave(void* group) {
  auto* g = static_cast<Group*>(group);
  if (g == nullptr) return;
  try {
    g->front->shutdown();
  } catch (...) {
    // Leaving is best effort: the peers may already be gone.
  }
  g->front.reset();
  g->gloo.reset();
  g->store.reset();
  delete g;
}

}  // extern "C"
