// Data-parallel collectives across processes through libtorch's c10d (the C++ side of
// torch.distributed): a TCPStore for the rendezvous (MASTER_ADDR:MASTER_PORT, the one
// torchrun's agent hosts, or one that rank 0 hosts), then a Gloo process group (CPU, any
// tensor) or, in builds with EMBTUNE_DIST_NCCL, an NCCL one (CUDA tensors). tch exposes
// none of it, so embtune calls c10d here; see docs/SCALING.md for the design.
//
// Gloo without gloo's headers. torch/csrc/distributed/c10d/ProcessGroupGloo.hpp includes
// <gloo/context.h> and four more headers that the torch wheels do not ship (gloo is linked
// statically into libtorch_cpu.so), and libtorch has no factory that returns a Gloo
// backend (Python's init_process_group builds it through libtorch_python's pybind
// constructor). So this file declares the part of c10d::ProcessGroupGloo it needs itself,
// member for member as in that header of torch 2.11 with gloo's types forward-declared:
// they occur only behind shared_ptr, so the layout does not depend on gloo. The object is
// built by libtorch's own exported constructor and used only through c10d::Backend's
// virtual functions, whose header the wheel does ship. The static_asserts below pin the
// declaration to the layout of torch 2.11 (sizes read from libtorch_cpu.so: the deleting
// destructor frees 0x1e8 bytes, Options::create_default allocates 0xb0): a torch upgrade
// fails to compile here until the declaration is compared with the new header again.
//
// Every C++ exception stays on this side of the C boundary: functions return 0, or non-zero
// with a one-paragraph message in `err` (same convention as fused_adamw.cpp).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#include <torch/headeronly/version.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#ifdef EMBTUNE_DIST_NCCL
// Needs the CUDA and NCCL headers (in the PyPI wheels' venv: site-packages/nvidia/cu13/
// include and nvidia/nccl/include) and links libtorch_cuda and libc10_cuda.
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

static_assert(TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 11,
              "dist.cpp declares c10d::ProcessGroupGloo as in torch 2.11: compare the "
              "declaration below with torch/csrc/distributed/c10d/ProcessGroupGloo.hpp of "
              "this torch and update the version and size checks");

// ---- The declaration of c10d::ProcessGroupGloo (torch 2.11, ProcessGroupGloo.hpp) ----
namespace gloo {
class Context;
namespace rendezvous {
class Store;
}
namespace transport {
class Device;
}
}  // namespace gloo

namespace c10d {
struct ProcessGroupStatus;  // logger.hpp; only behind shared_ptr here

class ProcessGroupGloo : public Backend {
 public:
  class AsyncWork;  // only behind intrusive_ptr here

  struct Options : public Backend::Options {
    explicit Options(std::chrono::milliseconds timeout = kBackendDefaultTimeout);
    // Options with the device(s) of GLOO_SOCKET_IFNAME, else the default device (the
    // address this host name resolves to, else loopback). Out of line in libtorch_cpu.
    static c10::intrusive_ptr<Options> create_default(
        std::chrono::milliseconds timeout = kBackendDefaultTimeout);

    std::vector<std::shared_ptr<::gloo::transport::Device>> devices;
    int threads{2};
  };

  static std::shared_ptr<::gloo::transport::Device> createDeviceForHostname(
      const std::string& hostname, bool lazyInit = false);

  explicit ProcessGroupGloo(const c10::intrusive_ptr<Store>& store, int rank, int size,
                            c10::intrusive_ptr<Options> options);
  ~ProcessGroupGloo() override;

 protected:
  std::shared_ptr<::gloo::rendezvous::Store> store_;
  const c10::intrusive_ptr<Options> options_;
  std::vector<std::shared_ptr<::gloo::Context>> contexts_;
  std::vector<std::thread> threads_;
  bool stop_{false};
  uint32_t collectiveCounter_{0};
  std::deque<c10::intrusive_ptr<AsyncWork>> workQueue_;
  std::vector<c10::intrusive_ptr<AsyncWork>> workInProgress_;
  std::mutex workMutex_;
  std::condition_variable workProduceCV_;
  std::condition_variable workConsumeCV_;
  uint64_t seq_{0};
  size_t local_id_;
  std::shared_ptr<ProcessGroupStatus> pgStatus_;
};
}  // namespace c10d

#if defined(__x86_64__) && defined(__linux__)
static_assert(sizeof(c10d::ProcessGroupGloo::Options) == 0xb0,
              "c10d::ProcessGroupGloo::Options differs from torch 2.11's (176 bytes)");
static_assert(sizeof(c10d::ProcessGroupGloo) == 0x1e8,
              "c10d::ProcessGroupGloo differs from torch 2.11's (488 bytes)");
#endif

namespace {

struct Group {
  std::string backend;  // "gloo" or "nccl"
  int rank = 0;
  int world = 1;
  std::chrono::milliseconds timeout{0};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
};

void write_error(char* err, size_t len, const std::string& msg) {
  if (err != nullptr && len > 0) std::snprintf(err, len, "%s", msg.c_str());
}

// The first non-empty line of `m`, trimmed: c10d's and gloo's messages can span lines,
// and the caller reports one.
std::string first_line(const std::string& m) {
  size_t pos = 0;
  while (pos <= m.size()) {
    size_t end = m.find('\n', pos);
    if (end == std::string::npos) end = m.size();
    std::string line = m.substr(pos, end - pos);
    const size_t a = line.find_first_not_of(" \t\r");
    if (a != std::string::npos) {
      const size_t b = line.find_last_not_of(" \t\r");
      return line.substr(a, b - a + 1);
    }
    pos = end + 1;
  }
  return std::string();
}

bool looks_like_timeout(const std::string& m) {
  std::string l(m);
  std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return std::tolower(c); });
  return l.find("timed out") != std::string::npos || l.find("timeout") != std::string::npos;
}

std::string where(const Group* g, const char* op) {
  std::string s = std::string("distributed ") + op;
  if (g != nullptr) {
    s += " (rank " + std::to_string(g->rank) + " of " + std::to_string(g->world) + ", " +
         g->backend + ")";
  }
  return s;
}

// Runs `f`, turning every exception into `err`: 0 on success, 1 otherwise.
template <typename F>
int guarded(const Group* g, const char* op, char* err, size_t len, F f) {
  std::string msg;
  try {
    f();
    return 0;
  } catch (const c10::DistNetworkError& e) {
    msg = std::string("network error: ") + e.what_without_backtrace();
  } catch (const c10::DistStoreError& e) {
    msg = std::string("rendezvous store error: ") + e.what_without_backtrace();
  } catch (const c10::DistBackendError& e) {
    msg = std::string("communication error: ") + e.what_without_backtrace();
  } catch (const c10::Error& e) {
    msg = e.what_without_backtrace();
  } catch (const std::exception& e) {  // gloo::IoException, gloo::EnforceNotMet, ...
    msg = e.what();
  } catch (...) {
    msg = "unknown C++ exception";
  }
  msg = first_line(msg);
  std::string out = where(g, op) + " failed: " + msg;
  if (g != nullptr && looks_like_timeout(msg)) {
    char secs[32];
    std::snprintf(secs, sizeof secs, "%g", static_cast<double>(g->timeout.count()) / 1000.0);
    out += std::string(" (no answer within the collective timeout of ") + secs +
           " s: another rank probably crashed, hung or is at a different step; see its log)";
  }
  write_error(err, len, out);
  return 1;
}

// Waits for `work`. Gloo's own operations already end with an error after the group's
// timeout (gloo::IoException "Timed out waiting ..."); the wait's deadline is a backstop a
// little later so that gloo's more precise message wins. NCCL's wait() only orders the
// current CUDA stream after the collective (no host block); its timeouts are the NCCL
// watchdog's, which aborts the communicator and the process (TORCH_NCCL_ASYNC_ERROR_HANDLING).
void await_work(const Group& g, const c10::intrusive_ptr<c10d::Work>& work) {
  if (g.backend == "nccl") {
    work->wait();
  } else {
    work->wait(g.timeout + std::chrono::seconds(10));
  }
}

void check_tensor(const Group& g, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), name, " is an undefined tensor");
  TORCH_CHECK(t.layout() == at::kStrided, name, " must be dense");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  if (g.backend == "nccl") {
    TORCH_CHECK(t.is_cuda(), name, " must be on a CUDA device for NCCL (got ", t.device(), ")");
  }
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

c10::intrusive_ptr<c10d::Backend> make_gloo(const c10::intrusive_ptr<c10d::Store>& store,
                                            const std::string& host, int rank, int world,
                                            std::chrono::milliseconds timeout) {
  auto opts = c10d::ProcessGroupGloo::Options::create_default(timeout);
  // create_default starts from kBackendDefaultTimeout (30 min): the timeout of every Gloo
  // operation (and of the connection phase) is set here.
  opts->timeout = timeout;
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if ((ifname == nullptr || ifname[0] == '\0') && is_loopback(host)) {
    // Single host: bind Gloo's pairs to loopback rather than to whatever the host name
    // resolves to in this container.
    opts->devices = {c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")};
    opts->threads = 2;
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
}

#ifdef EMBTUNE_DIST_NCCL
c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store>& store,
                                            int rank, int world, int device,
                                            std::chrono::milliseconds timeout) {
  TORCH_CHECK(device >= 0, "NCCL needs the CUDA device index of this rank (LOCAL_RANK)");
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
  auto opts = c10d::ProcessGroupNCCL::Options::create(/*is_high_priority_stream=*/false);
  opts->timeout = timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
  const at::Device dev(at::kCUDA, static_cast<c10::DeviceIndex>(device));
  pg->setBoundDeviceId(dev);
  // Creates the communicator now, so that a failing rendezvous fails here, not at the
  // first collective of training.
  pg->eagerConnectSingleDevice(dev);
  return pg;
}
#endif

}  // namespace

// 1 when this build can create a group of `backend` ("gloo", "nccl"), else 0.
extern "C" int embtune_dist_has_backend(const char* backend) {
  if (backend == nullptr) return 0;
  const std::string b(backend);
  if (b == "gloo") return 1;
#ifdef EMBTUNE_DIST_NCCL
  if (b == "nccl") return 1;
#endif
  return 0;
}

// Joins the process group of `world` processes as `rank`. The rendezvous is a c10d
// TCPStore at host:port, which this process hosts when `host_store` is non-zero (rank 0 of
// `embtune train --nproc-per-node`, or of a torchrun launch without the agent's store) and
// connects to otherwise (TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent hosts it).
// `listen_fd` (>= 0, host_store only) is a socket already bound to `port` and listening,
// inherited from `embtune train --nproc-per-node`, which picked the port: no race for it.
// Every key goes under `prefix` (e.g. "embtune/<TORCHELASTIC_RESTART_COUNT>/"), since the
// agent's store outlives worker restarts. `device` is the CUDA device index for NCCL (-1
// for Gloo). `timeout_s` bounds the rendezvous, the connection and every collective.
// Blocks until all ranks have joined. On success *out is a handle for the calls below.
extern "C" int embtune_dist_init(const char* backend, const char* host, int port, int host_store,
                                 int listen_fd, const char* prefix, int rank, int world,
                                 int device, double timeout_s, void** out, char* err,
                                 size_t err_len) {
  if (out != nullptr) *out = nullptr;
  auto g = std::make_unique<Group>();
  g->backend = backend != nullptr ? backend : "";
  g->rank = rank;
  g->world = world;
  g->timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000.0));
  Group* gp = g.get();
  const int rc = guarded(gp, "init", err, err_len, [&] {
    TORCH_CHECK(out != nullptr, "no place for the handle");
    TORCH_CHECK(host != nullptr && host[0] != '\0', "no rendezvous host (MASTER_ADDR)");
    TORCH_CHECK(port > 0 && port < 65536, "rendezvous port ", port, " is not in 1..65535");
    TORCH_CHECK(world >= 1 && rank >= 0 && rank < world, "rank ", rank,
                " is not in 0..", world - 1);
    TORCH_CHECK(timeout_s > 0, "the timeout must be positive");
    TORCH_CHECK(embtune_dist_has_backend(backend), "backend '", g->backend,
                "' is not available in this build",
                g->backend == "nccl" ? " (built without EMBTUNE_DIST_NCCL: no CUDA/NCCL headers)"
                                     : "");
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = host_store != 0;
    so.numWorkers = static_cast<std::size_t>(world);
    so.waitWorkers = true;
    so.timeout = g->timeout;
    if (host_store != 0 && listen_fd >= 0) so.masterListenFd = listen_fd;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
    const std::string pre = prefix != nullptr ? prefix : "";
    if (pre.empty()) {
      g->store = tcp;
    } else {
      g->store = c10::make_intrusive<c10d::PrefixStore>(pre, tcp);
    }
    g->store->setTimeout(g->timeout);
    if (g->backend == "gloo") {
      g->pg = make_gloo(g->store, host, rank, world, g->timeout);
    }
#ifdef EMBTUNE_DIST_NCCL
    if (g->backend == "nccl") {
      g->pg = make_nccl(g->store, rank, world, device, g->timeout);
    }
#else
    (void)device;
#endif
    TORCH_CHECK(g->pg, "no process group was created");
    TORCH_CHECK(g->pg->getRank() == rank && g->pg->getSize() == world,
                "the process group reports rank ", g->pg->getRank(), " of ", g->pg->getSize());
  });
  if (rc != 0) return rc;
  *out = g.release();
  return 0;
}

// Sums `t` over all ranks, in place (every rank ends with the same sum). `t`: dense and
// contiguous (embtune's flat gradient buffer); on CUDA for NCCL.
extern "C" int embtune_dist_all_reduce_sum(void* handle, const at::Tensor* t, char* err,
                                           size_t err_len) {
  auto* g = static_cast<Group*>(handle);
  return guarded(g, "all_reduce", err, err_len, [&] {
    TORCH_CHECK(g != nullptr && t != nullptr, "null argument");
    check_tensor(*g, *t, "the tensor");
    c10::AutoGradMode no_grad(false);
    std::vector<at::Tensor> ts{*t};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = g->timeout;
    await_work(*g, g->pg->allreduce(ts, opts));
  });
}

// Concatenates every rank's `input` along dim 0, rank order, into `output`: input (B, ...),
// output (world*B, ...) preallocated, same dtype and device, contiguous. Every rank must
// pass the same B. No autograd: the result has no grad_fn (see docs/SCALING.md for how the
// caller puts its own rows back with their graph).
extern "C" int embtune_dist_all_gather(void* handle, const at::Tensor* input,
                                       const at::Tensor* output, char* err, size_t err_len) {
  auto* g = static_cast<Group*>(handle);
  return guarded(g, "all_gather", err, err_len, [&] {
    TORCH_CHECK(g != nullptr && input != nullptr && output != nullptr, "null argument");
    c10::AutoGradMode no_grad(false);
    at::Tensor in = input->detach().contiguous();
    at::Tensor out = output->detach();
    check_tensor(*g, in, "the input");
    check_tensor(*g, out, "the output");
    TORCH_CHECK(in.scalar_type() == out.scalar_type(), "input is ", in.scalar_type(),
                " but output is ", out.scalar_type());
    TORCH_CHECK(in.device() == out.device(), "input is on ", in.device(), " but output on ",
                out.device());
    TORCH_CHECK(out.numel() == in.numel() * g->world, "output has ", out.numel(),
                " elements, expected world size ", g->world, " x ", in.numel());
    if (in.dim() > 0) {
      TORCH_CHECK(out.dim() == in.dim() && out.size(0) == in.size(0) * g->world,
                  "output shape ", out.sizes(), " is not (world*", in.size(0), ", ...)");
    }
    c10d::AllgatherOptions opts;
    opts.timeout = g->timeout;
    await_work(*g, g->pg->_allgather_base(out, in, opts));
  });
}

// Overwrites `t` on every rank with rank `root`'s `t` (initial parameters, seeds).
extern "C" int embtune_dist_broadcast(void* handle, const at::Tensor* t, int root, char* err,
                                      size_t err_len) {
  auto* g = static_cast<Group*>(handle);
  return guarded(g, "broadcast", err, err_len, [&] {
    TORCH_CHECK(g != nullptr && t != nullptr, "null argument");
    TORCH_CHECK(root >= 0 && root < g->world, "root ", root, " is not a rank");
    check_tensor(*g, *t, "the tensor");
    c10::AutoGradMode no_grad(false);
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    opts.timeout = g->timeout;
    await_work(*g, g->pg->broadcast(ts, opts));
  });
}

// Returns when every rank has called it (or fails after the timeout).
extern "C" int embtune_dist_barrier(void* handle, char* err, size_t err_len) {
  auto* g = static_cast<Group*>(handle);
  return guarded(g, "barrier", err, err_len, [&] {
    TORCH_CHECK(g != nullptr, "null argument");
    c10d::BarrierOptions opts;
    opts.timeout = g->timeout;
    auto work = g->pg->barrier(opts);
    // NCCL's barrier is an all-reduce on the bound device: block the host on it too.
    if (g->backend == "nccl") {
      work->wait(g->timeout);
    } else {
      await_work(*g, work);
    }
  });
}

// Leaves the group and frees the handle (NCCL: shuts the communicators down first). After
// a failed collective call embtune_dist_abandon instead: this one can block until the
// peers' outstanding operations time out.
extern "C" int embtune_dist_destroy(void* handle, char* err, size_t err_len) {
  auto* g = static_cast<Group*>(handle);
  if (g == nullptr) return 0;
  const int rc = guarded(g, "shutdown", err, err_len, [&] {
    g->pg->shutdown();
    g->pg.reset();  // ~ProcessGroupGloo joins its worker threads
    g->store.reset();
  });
  delete g;
  return rc;
}

// For the error path: aborts the backend's communicators where it can (NCCL) and
// deliberately leaks the group, so that exiting the process does not wait on a collective
// that a dead peer will never finish.
extern "C" void embtune_dist_abandon(void* handle) {
  auto* g = static_cast<Group*>(handle);
  if (g == nullptr) return;
  try {
    g->pg->abort();
  } catch (...) {
  }
  // The Group and its process group stay allocated until the process exits.
}
