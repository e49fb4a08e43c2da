// Memory statistics of libtorch's caching allocator for a CUDA device, the figures behind
// PyTorch's torch.cuda.memory_allocated / max_memory_allocated / memory_reserved /
// max_memory_reserved (torch/cuda/memory.py reads the same DeviceStats, "allocated_bytes.
// all.peak" etc.). tch exposes none of them, so embtune asks c10's device-agnostic
// DeviceAllocator interface (c10/core/CachingDeviceAllocator.h) directly: only libc10 is
// needed, no CUDA headers. Every C++ exception stays on this side of the C boundary.
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/DeviceType.h>

#include <cstdint>
#include <cstdio>
#include <exception>

namespace {
void write_error(char* err, size_t len, const char* what) {
  if (err != nullptr && len > 0) {
    std::snprintf(err, len, "%s", what);
  }
}

// Runs `f(allocator)` on the CUDA DeviceAllocator: 0 on success; 1 when that allocator is
// not ready, 2 when libtorch threw, with the message in `err` either way.
template <typename F>
int with_cuda_allocator(char* err, size_t len, F f) {
  try {
    c10::DeviceAllocator* a = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    if (!a->initialized()) {
      write_error(err, len, "the CUDA allocator is not initialized (no tensor was put on a CUDA device)");
      return 1;
    }
    f(a);
    return 0;
  } catch (const std::exception& e) {
    write_error(err, len, e.what());
  } catch (...) {
    write_error(err, len, "unknown C++ exception");
  }
  return 2;
}
}  // namespace

// out[0..4] = allocated current, allocated peak, reserved current, reserved peak (bytes,
// all pools). Returns 0 on success, non-zero with a message in `err` otherwise.
extern "C" int embtune_cuda_memory_stats(int device, int64_t* out, char* err, size_t err_len) {
  return with_cuda_allocator(err, err_len, [&](c10::DeviceAllocator* a) {
    const auto stats = a->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    out[0] = stats.allocated_bytes[all].current;
    out[1] = stats.allocated_bytes[all].peak;
    out[2] = stats.reserved_bytes[all].current;
    out[3] = stats.reserved_bytes[all].peak;
  });
}

// Resets the peaks to the current values (torch.cuda.reset_peak_memory_stats).
extern "C" int embtune_cuda_reset_peak(int device, char* err, size_t err_len) {
  return with_cuda_allocator(err, err_len, [&](c10::DeviceAllocator* a) {
    a->resetPeakStats(static_cast<c10::DeviceIndex>(device));
  });
}
