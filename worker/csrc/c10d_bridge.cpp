// The bridge between toucan-worker (Rust, through tch) and libtorch's own collectives (c10d): a
// TCPStore rendezvous and a Gloo process group, behind a few C functions that
// src/collectives.rs calls. It uses only c10d's API (store, process group, options, work
// objects) and never Gloo's own types: the Gloo headers it compiles against (Debian's
// libgloo-dev) are an older snapshot than the Gloo inside libtorch.
//
// Every function catches C++ exceptions and reports them as text in `err` (NUL-terminated,
// truncated to `err_len`; c10's errors without their C++ backtrace): none crosses into Rust.

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

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
// rank's own connections go through the address `local_host` resolves to. Returns nullptr (and
// the reason in err) when the rendezvous fails or times out.
void* toucan_c10d_join(const char* host, uint16_t port, const char* local_host, int rank,
                       int world_size, int64_t timeout_ms, char* err, size_t err_len) {
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
    group->pg =
        c10::make_intrusive<c10d::ProcessGroupGloo>(group->store, rank, world_size, options);
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
    static_cast<Group*>(group)->pg->allreduce(list, options)->wait();
    return 0;
  });
}

// Copies rank `root`'s tensor into every rank's, in place; returns 0, or -1 with err set.
int toucan_c10d_broadcast(void* group, at::Tensor* tensor, int root, char* err, size_t err_len) {
  return guarded(err, err_len, -1, [&] {
    std::vector<at::Tensor> list{*tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    static_cast<Group*>(group)->pg->broadcast(list, options)->wait();
    return 0;
  });
}

// Waits until every rank has called it; returns 0, or -1 with err set.
int toucan_c10d_barrier(void* group, char* err, size_t err_len) {
  return guarded(err, err_len, -1, [&] {
    static_cast<Group*>(group)->pg->barrier()->wait();
    return 0;
  });
}

// Leaves the group: the process group is shut down before the store it talks through (its
// threads would otherwise still be running when the process exits).
void toucan_c10d_leave(void* group) {
  auto* g = static_cast<Group*>(group);
  if (g == nullptr) return;
  try {
    g->pg->shutdown();
  } catch (...) {
    // Leaving is best effort: the peers may already be gone.
  }
  g->pg.reset();
  g->store.reset();
  delete g;
}

}  // extern "C"
