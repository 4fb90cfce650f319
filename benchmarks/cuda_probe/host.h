// persistent.cu's kernels compiled for the CPU, to check them without a GPU: ffi.cc built with
// -DRNNKIT_PROBE_HOST includes this header, then persistent.cu itself, and runs each launch as
// one OS thread per CUDA thread (every CTA's threads at once, as a cooperative launch has them).
//
// What it checks: the kernels' own code (index arithmetic, the placement of __syncthreads and of
// the grid barrier, the shared-memory layout and size) on real concurrent threads, and, built
// with -fsanitize=thread or address, their data races between barriers and their out-of-bounds
// reads and writes. What it cannot: the GPU's memory model (x86 orders more than a GPU does;
// here the barrier's atomicAdd is a release-acquire operation), warp scheduling, speed.

#pragma once

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(threads)
#define __restrict__ __restrict

struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }

struct Dim3 {
  unsigned int x = 0, y = 1, z = 1;
};

namespace rnnkit_host {
// The running thread's place in its launch, and its CTA's barrier and shared memory.
struct Cta {
  pthread_barrier_t barrier;
  float4* shared;
};
inline thread_local Dim3 thread_idx, block_idx, block_dim, grid_dim;
inline thread_local Cta* cta = nullptr;
}  // namespace rnnkit_host

#define threadIdx (rnnkit_host::thread_idx)
#define blockIdx (rnnkit_host::block_idx)
#define blockDim (rnnkit_host::block_dim)
#define gridDim (rnnkit_host::grid_dim)

// persistent.cu's hooks (it defines the CUDA versions where these are not defined first).
#define RNNKIT_DYNAMIC_SHARED(name) float4* const name = rnnkit_host::cta->shared
#define RNNKIT_POLL_PAUSE() std::this_thread::yield()
inline unsigned int rnnkit_load_acquire(const unsigned int* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

inline void __syncthreads() { pthread_barrier_wait(&rnnkit_host::cta->barrier); }
// (ThreadSanitizer does not model fences; there the acq_rel atomicAdd below orders alone.)
#if defined(__SANITIZE_THREAD__)
inline void __threadfence() {}
#else
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
#endif
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
[[noreturn]] inline void __trap() {
  std::fprintf(stderr, "rnnkit cuda probe (host): a kernel trapped (its grid barrier waited too long)\n");
  std::abort();
}
template <class T>
inline T __ldcg(const T* p) {
  return *p;
}
using std::min;

namespace rnnkit_host {
// Runs kernel(args...) as n_cta CTAs of `threads` threads, each CTA with `shared` bytes of its
// own (heap memory of exactly that size, so AddressSanitizer sees a read or write past it).
template <class... P, class... A>
void launch(void (*kernel)(P...), int n_cta, int threads, int shared, A... args) {
  std::vector<Cta> ctas(n_cta);
  for (Cta& c : ctas) {
    pthread_barrier_init(&c.barrier, nullptr, threads);
    c.shared = static_cast<float4*>(std::malloc(std::max(shared, 1)));  // 16-byte aligned
  }
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(n_cta) * threads);
  for (int k = 0; k < n_cta; ++k)
    for (int i = 0; i < threads; ++i)
      workers.emplace_back([&, k, i] {
        thread_idx.x = i, block_idx.x = k, block_dim.x = threads, grid_dim.x = n_cta;
        cta = &ctas[k];
        kernel(args...);
      });
  for (auto& w : workers) w.join();
  for (Cta& c : ctas) {
    pthread_barrier_destroy(&c.barrier);
    std::free(c.shared);
  }
}
}  // namespace rnnkit_host
