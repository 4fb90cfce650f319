// XLA FFI glue for the persistent-kernel probe (benchmarks/cuda_probe.py): compiles
// persistent.cu with NVRTC on first use, for the GPU it runs on, and launches it
// cooperatively on XLA's stream. Built with the host C++ compiler alone: the CUDA driver and
// NVRTC are opened at run time (dlopen), declared here with the few types they take, so no
// CUDA headers or toolkit are needed to build it.
//
// Built with -DRNNKIT_PROBE_HOST, the same handlers serve XLA's CPU instead: persistent.cu is
// compiled into this library through host.h and each launch runs on CPU threads (the probe's
// `host` check). Only the kernels' lookup and launch differ between the two builds.

#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "plan.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kThreadsPerCta = 256;  // every launch's CTA size

#if defined(RNNKIT_PROBE_HOST)
}  // namespace
#include "host.h"
#include "persistent.cu"
namespace {

// No stream on the CPU: the handlers take the device ordinal (a context every platform has).
using Stream = int32_t;
using StreamCtx = ffi::DeviceOrdinal;

// The kernels, compiled into this library.
struct Kernel {
  decltype(&::lstm_fwd) lstm_fwd = &::lstm_fwd;
  decltype(&::lstm_bwd) lstm_bwd = &::lstm_bwd;
  decltype(&::gru_fwd) gru_fwd = &::gru_fwd;
  decltype(&::gru_bwd) gru_bwd = &::gru_bwd;
  std::string error;
};

const Kernel& kernel(std::string_view, Stream) {
  static const Kernel k;
  return k;
}

// Threads per CTA: the GPU's 256, or $RNNKIT_PROBE_HOST_THREADS (the kernels take any count).
int host_threads() {
  const char* env = std::getenv("RNNKIT_PROBE_HOST_THREADS");
  return env && std::atoi(env) > 0 ? std::atoi(env) : kThreadsPerCta;
}

// Zero the barrier and run `fn` on CPU threads: n_cta CTAs with `shared` bytes each.
template <class Fn, class... A>
ffi::Error launch(const Kernel&, Fn fn, Stream, int n_cta, int shared, ffi::ResultBuffer<ffi::U32>& barrier,
                  A... args) {
  *barrier->typed_data() = 0;
  rnnkit_host::launch(fn, n_cta, host_threads(), shared, args...);
  return ffi::Error::Success();
}
#else
// --- the CUDA driver API and NVRTC, as much as this file calls -------------------------------
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
struct CUctx_st;
struct CUmod_st;
struct CUfunc_st;
struct CUstream_st;
using CUcontext = CUctx_st*;
using CUmodule = CUmod_st*;
using CUfunction = CUfunc_st*;
using CUstream = CUstream_st*;
using nvrtcResult = int;
using Stream = CUstream;
using StreamCtx = ffi::PlatformStream<CUstream>;
struct _nvrtcProgram;
using nvrtcProgram = _nvrtcProgram*;

constexpr int kComputeMajor = 75, kComputeMinor = 76;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_*
constexpr int kMaxDynamicShared = 8;                   // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

struct Api {
  CUresult (*cuStreamGetCtx)(CUstream, CUcontext*);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuCtxGetDevice)(CUdevice*);
  CUresult (*cuDeviceGetAttribute)(int*, int, CUdevice);
  CUresult (*cuModuleLoadData)(CUmodule*, const void*);
  CUresult (*cuModuleGetFunction)(CUfunction*, CUmodule, const char*);
  CUresult (*cuFuncSetAttribute)(CUfunction, int, int);
  CUresult (*cuLaunchCooperativeKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                        unsigned, CUstream, void**);
  CUresult (*cuMemsetD32Async)(CUdeviceptr, unsigned, size_t, CUstream);
  CUresult (*cuGetErrorString)(CUresult, const char**);
  nvrtcResult (*nvrtcCreateProgram)(nvrtcProgram*, const char*, const char*, int, const char* const*,
                                    const char* const*);
  nvrtcResult (*nvrtcCompileProgram)(nvrtcProgram, int, const char* const*);
  nvrtcResult (*nvrtcGetProgramLogSize)(nvrtcProgram, size_t*);
  nvrtcResult (*nvrtcGetProgramLog)(nvrtcProgram, char*);
  nvrtcResult (*nvrtcGetCUBINSize)(nvrtcProgram, size_t*);
  nvrtcResult (*nvrtcGetCUBIN)(nvrtcProgram, char*);
  nvrtcResult (*nvrtcDestroyProgram)(nvrtcProgram*);
};

template <class F>
bool bind(void* lib, const char* name, F*& fn) {
  fn = reinterpret_cast<F*>(dlsym(lib, name));
  return fn != nullptr;
}

// The driver (libcuda.so.1, which JAX has loaded) and NVRTC ($RNNKIT_NVRTC, else by name).
std::string open_api(Api& a) {
  void* cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (!cuda) return std::string("cannot open libcuda.so.1: ") + dlerror();
  const char* path = std::getenv("RNNKIT_NVRTC");
  void* nvrtc = nullptr;
  for (const char* name : {path, "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"})
    if (name && (nvrtc = dlopen(name, RTLD_NOW | RTLD_GLOBAL))) break;
  if (!nvrtc) return "cannot open NVRTC: set RNNKIT_NVRTC to libnvrtc.so's path";
  std::string missing;
  auto need = [&](void* lib, const char* name, auto*& fn) {
    if (missing.empty() && !bind(lib, name, fn)) missing = name;
  };
#define RNNKIT_NEED(lib, fn) need(lib, #fn, a.fn)
  RNNKIT_NEED(cuda, cuStreamGetCtx);
  RNNKIT_NEED(cuda, cuCtxSetCurrent);
  RNNKIT_NEED(cuda, cuCtxGetDevice);
  RNNKIT_NEED(cuda, cuDeviceGetAttribute);
  RNNKIT_NEED(cuda, cuModuleLoadData);
  RNNKIT_NEED(cuda, cuModuleGetFunction);
  RNNKIT_NEED(cuda, cuFuncSetAttribute);
  RNNKIT_NEED(cuda, cuLaunchCooperativeKernel);
  RNNKIT_NEED(cuda, cuMemsetD32Async);
  RNNKIT_NEED(cuda, cuGetErrorString);
  RNNKIT_NEED(nvrtc, nvrtcCreateProgram);
  RNNKIT_NEED(nvrtc, nvrtcCompileProgram);
  RNNKIT_NEED(nvrtc, nvrtcGetProgramLogSize);
  RNNKIT_NEED(nvrtc, nvrtcGetProgramLog);
  RNNKIT_NEED(nvrtc, nvrtcGetCUBINSize);
  RNNKIT_NEED(nvrtc, nvrtcGetCUBIN);
  RNNKIT_NEED(nvrtc, nvrtcDestroyProgram);
#undef RNNKIT_NEED
  return missing.empty() ? "" : missing + " is missing from the CUDA driver or NVRTC";
}

std::string cuda_error(const Api& a, CUresult rc, const char* what) {
  const char* text = nullptr;
  a.cuGetErrorString(rc, &text);
  return std::string(what) + ": CUDA error " + std::to_string(rc) + " (" + (text ? text : "?") + ")";
}

// The compiled kernels, built once (the probe runs on one GPU).
struct Kernel {
  Api api{};
  CUfunction lstm_fwd = nullptr, lstm_bwd = nullptr, gru_fwd = nullptr, gru_bwd = nullptr;
  std::string error;
};

// The stream's context made current on this thread (XLA's, whatever the thread had), then the
// kernels, compiled and loaded into it on the first call.
const Kernel& kernel(std::string_view source, Stream stream) {
  static Kernel k;
  static std::once_flag once;
  std::call_once(once, [&] { k.error = open_api(k.api); });
  if (!k.error.empty()) return k;
  CUcontext ctx = nullptr;
  CUresult rc = k.api.cuStreamGetCtx(stream, &ctx);
  if (rc == 0) rc = k.api.cuCtxSetCurrent(ctx);
  if (rc) {
    thread_local Kernel failed;
    failed.error = cuda_error(k.api, rc, "the stream's context");
    return failed;
  }
  static std::once_flag built;
  std::call_once(built, [&] {
    const Api& a = k.api;
    CUdevice dev = 0;
    int major = 0, minor = 0;
    CUresult status = a.cuCtxGetDevice(&dev);
    if (status == 0) status = a.cuDeviceGetAttribute(&major, kComputeMajor, dev);
    if (status == 0) status = a.cuDeviceGetAttribute(&minor, kComputeMinor, dev);
    if (status) {
      k.error = cuda_error(a, status, "device query");
      return;
    }
    const std::string src(source), arch = "--gpu-architecture=sm_" + std::to_string(major * 10 + minor);
    const char* opts[] = {arch.c_str(), "-std=c++17"};
    nvrtcProgram prog = nullptr;
    if (a.nvrtcCreateProgram(&prog, src.c_str(), "persistent.cu", 0, nullptr, nullptr)) {
      k.error = "nvrtcCreateProgram failed";
      return;
    }
    const nvrtcResult compiled = a.nvrtcCompileProgram(prog, 2, opts);
    size_t size = 0;
    a.nvrtcGetProgramLogSize(prog, &size);
    std::string log(size, '\0');
    a.nvrtcGetProgramLog(prog, log.data());
    if (compiled) {
      k.error = "NVRTC could not compile the kernel:\n" + log;
      a.nvrtcDestroyProgram(&prog);
      return;
    }
    a.nvrtcGetCUBINSize(prog, &size);
    std::vector<char> cubin(size);
    a.nvrtcGetCUBIN(prog, cubin.data());
    a.nvrtcDestroyProgram(&prog);
    CUmodule module = nullptr;
    if ((status = a.cuModuleLoadData(&module, cubin.data()))) k.error = cuda_error(a, status, "cuModuleLoadData");
    else if ((status = a.cuModuleGetFunction(&k.lstm_fwd, module, "lstm_fwd")) ||
             (status = a.cuModuleGetFunction(&k.lstm_bwd, module, "lstm_bwd")) ||
             (status = a.cuModuleGetFunction(&k.gru_fwd, module, "gru_fwd")) ||
             (status = a.cuModuleGetFunction(&k.gru_bwd, module, "gru_bwd")))
      k.error = cuda_error(a, status, "cuModuleGetFunction");
  });
  return k;
}

// Zero the barrier, size the shared memory and launch `fn` cooperatively, one CTA per nCTA,
// with the kernel's arguments `args` (of its parameters' types).
template <class... A>
ffi::Error launch(const Kernel& k, CUfunction fn, Stream stream, int n_cta, int shared,
                  ffi::ResultBuffer<ffi::U32>& barrier, A... args) {
  const Api& a = k.api;
  void* pointers[] = {&args...};
  CUresult rc = a.cuFuncSetAttribute(fn, kMaxDynamicShared, shared);
  if (rc) return ffi::Error::Internal(cuda_error(a, rc, "shared memory size"));
  if ((rc = a.cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(barrier->typed_data()), 0, 1, stream)))
    return ffi::Error::Internal(cuda_error(a, rc, "barrier reset"));
  if ((rc = a.cuLaunchCooperativeKernel(fn, n_cta, 1, 1, kThreadsPerCta, 1, 1, shared, stream, pointers)))
    return ffi::Error::Internal(cuda_error(a, rc, "cooperative launch"));
  return ffi::Error::Success();
}
#endif

// The sizes of a [T, nCTA, gates, U, B] buffer, as the kernels take them (H = nCTA * U); false
// where its rank or gate count differs.
struct Sizes {
  int T, n_cta, U, B, H;
};

bool sizes_of(const ffi::Buffer<ffi::F32>& a, int64_t gates, Sizes& s) {
  const auto d = a.dimensions();
  if (d.size() != 5 || d[2] != gates) return false;
  s = {static_cast<int>(d[0]), static_cast<int>(d[1]), static_cast<int>(d[3]), static_cast<int>(d[4]), 0};
  s.H = s.n_cta * s.U;
  return true;
}

// A result's data, or null when it has no elements (inference: nothing saved).
float* data_or_null(ffi::ResultBuffer<ffi::F32>& r) { return r->element_count() ? r->typed_data() : nullptr; }

// zx [T, nCTA, 4, U, B], wh [H, nCTA, 4, U], h0 and c0 [nCTA, U, B] -> hs [T, nCTA, U, B],
// c_out [nCTA, U, B], gates [T, nCTA, 4, U, B] and cs [T, nCTA, U, B] (empty: not saved),
// barrier [1] (scratch).
ffi::Error LstmFwd(Stream stream, std::string_view source, int64_t rows, float forget_bias,
                   ffi::Buffer<ffi::F32> zx, ffi::Buffer<ffi::F32> wh, ffi::Buffer<ffi::F32> h0,
                   ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> c_out,
                   ffi::ResultBuffer<ffi::F32> gates, ffi::ResultBuffer<ffi::F32> cs,
                   ffi::ResultBuffer<ffi::U32> barrier) {
  Sizes z;
  if (!sizes_of(zx, 4, z)) return ffi::Error::InvalidArgument("zx must be [T, nCTA, 4, U, B]");
  const rnnkit_probe::Plan plan = rnnkit_probe::lstm_fwd_plan(rows, z.B, z.H, z.U);
  const Kernel& k = kernel(source, stream);
  if (!k.error.empty()) return ffi::Error::Internal(k.error);
  const float *p_zx = zx.typed_data(), *p_wh = wh.typed_data(), *p_h0 = h0.typed_data(), *p_c0 = c0.typed_data();
  float *p_hs = hs->typed_data(), *p_c = c_out->typed_data(), *p_g = data_or_null(gates), *p_cs = data_or_null(cs);
  unsigned int* counter = barrier->typed_data();
  return launch(k, k.lstm_fwd, stream, z.n_cta, plan.shared, barrier, p_zx, p_wh, p_h0, p_c0, p_hs, p_c, p_g, p_cs,
                counter, z.T, z.B, z.H, z.U, plan.R, forget_bias);
}

// dh_out [T, nCTA, U, B], dc_T [nCTA, U, B], gates, cs, c0 and wh as above -> dz
// [T, nCTA, 4, U, B], dh0 and dc0 [nCTA, U, B], barrier [1] (scratch).
ffi::Error LstmBwd(Stream stream, std::string_view source, int64_t rows, ffi::Buffer<ffi::F32> dh_out,
                   ffi::Buffer<ffi::F32> dc_T, ffi::Buffer<ffi::F32> gates, ffi::Buffer<ffi::F32> cs,
                   ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> wh, ffi::ResultBuffer<ffi::F32> dz,
                   ffi::ResultBuffer<ffi::F32> dh0, ffi::ResultBuffer<ffi::F32> dc0,
                   ffi::ResultBuffer<ffi::U32> barrier) {
  Sizes z;
  if (!sizes_of(gates, 4, z)) return ffi::Error::InvalidArgument("gates must be [T, nCTA, 4, U, B]");
  const rnnkit_probe::Plan plan = rnnkit_probe::lstm_bwd_plan(rows, z.B, z.H, z.U);
  const Kernel& k = kernel(source, stream);
  if (!k.error.empty()) return ffi::Error::Internal(k.error);
  const float *p_dh = dh_out.typed_data(), *p_dc = dc_T.typed_data(), *p_g = gates.typed_data();
  const float *p_cs = cs.typed_data(), *p_c0 = c0.typed_data(), *p_wh = wh.typed_data();
  float *p_dz = dz->typed_data(), *p_dh0 = dh0->typed_data(), *p_dc0 = dc0->typed_data();
  unsigned int* counter = barrier->typed_data();
  return launch(k, k.lstm_bwd, stream, z.n_cta, plan.shared, barrier, p_dh, p_dc, p_g, p_cs, p_c0, p_wh, p_dz, p_dh0,
                p_dc0, counter, z.T, z.B, z.H, z.U, plan.R);
}

// zx [T, nCTA, 3, U, B], wg [H, nCTA, 2, U], wc [H, nCTA, U], h0 [nCTA, U, B] -> hs and rh
// [T, nCTA, U, B], saved [T, nCTA, 3, U, B] (empty: not saved), barrier [1] (scratch).
ffi::Error GruFwd(Stream stream, std::string_view source, int64_t rows, ffi::Buffer<ffi::F32> zx,
                  ffi::Buffer<ffi::F32> wg, ffi::Buffer<ffi::F32> wc, ffi::Buffer<ffi::F32> h0,
                  ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> rh, ffi::ResultBuffer<ffi::F32> saved,
                  ffi::ResultBuffer<ffi::U32> barrier) {
  Sizes z;
  if (!sizes_of(zx, 3, z)) return ffi::Error::InvalidArgument("zx must be [T, nCTA, 3, U, B]");
  const rnnkit_probe::Plan plan = rnnkit_probe::gru_fwd_plan(rows, z.B, z.H, z.U);
  const Kernel& k = kernel(source, stream);
  if (!k.error.empty()) return ffi::Error::Internal(k.error);
  const float *p_zx = zx.typed_data(), *p_wg = wg.typed_data(), *p_wc = wc.typed_data(), *p_h0 = h0.typed_data();
  float *p_hs = hs->typed_data(), *p_rh = rh->typed_data(), *p_s = data_or_null(saved);
  unsigned int* counter = barrier->typed_data();
  return launch(k, k.gru_fwd, stream, z.n_cta, plan.shared, barrier, p_zx, p_wg, p_wc, p_h0, p_hs, p_rh, p_s, counter,
                z.T, z.B, z.H, z.U, plan.R);
}

// dh_out [T, nCTA, U, B], saved [T, nCTA, 3, U, B], hs [T, nCTA, U, B], h0, wg and wc as
// above -> dz [T, nCTA, 3, U, B], dh0 [nCTA, U, B], barrier [1] (scratch).
ffi::Error GruBwd(Stream stream, std::string_view source, int64_t rows, ffi::Buffer<ffi::F32> dh_out,
                  ffi::Buffer<ffi::F32> saved, ffi::Buffer<ffi::F32> hs, ffi::Buffer<ffi::F32> h0,
                  ffi::Buffer<ffi::F32> wg, ffi::Buffer<ffi::F32> wc, ffi::ResultBuffer<ffi::F32> dz,
                  ffi::ResultBuffer<ffi::F32> dh0, ffi::ResultBuffer<ffi::U32> barrier) {
  Sizes z;
  if (!sizes_of(saved, 3, z)) return ffi::Error::InvalidArgument("saved must be [T, nCTA, 3, U, B]");
  const rnnkit_probe::Plan plan = rnnkit_probe::gru_bwd_plan(rows, z.B, z.H, z.U);
  const Kernel& k = kernel(source, stream);
  if (!k.error.empty()) return ffi::Error::Internal(k.error);
  const float *p_dh = dh_out.typed_data(), *p_s = saved.typed_data(), *p_hs = hs.typed_data();
  const float *p_h0 = h0.typed_data(), *p_wg = wg.typed_data(), *p_wc = wc.typed_data();
  float *p_dz = dz->typed_data(), *p_dh0 = dh0->typed_data();
  unsigned int* counter = barrier->typed_data();
  return launch(k, k.gru_bwd, stream, z.n_cta, plan.shared, barrier, p_dh, p_s, p_hs, p_h0, p_wg, p_wc, p_dz, p_dh0,
                counter, z.T, z.B, z.H, z.U, plan.R);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnkitProbeLstmFwd, LstmFwd,
                              ffi::Ffi::Bind()
                                  .Ctx<StreamCtx>()
                                  .Attr<std::string_view>("source")
                                  .Attr<int64_t>("rows")
                                  .Attr<float>("forget_bias")
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::U32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnkitProbeLstmBwd, LstmBwd,
                              ffi::Ffi::Bind()
                                  .Ctx<StreamCtx>()
                                  .Attr<std::string_view>("source")
                                  .Attr<int64_t>("rows")
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::U32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnkitProbeGruFwd, GruFwd,
                              ffi::Ffi::Bind()
                                  .Ctx<StreamCtx>()
                                  .Attr<std::string_view>("source")
                                  .Attr<int64_t>("rows")
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::U32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnkitProbeGruBwd, GruBwd,
                              ffi::Ffi::Bind()
                                  .Ctx<StreamCtx>()
                                  .Attr<std::string_view>("source")
                                  .Attr<int64_t>("rows")
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::U32>>());
