// rnnkit's native CPU kernel: its threads, and how work is split between them (part of
// rnn_cpu.cc's one translation unit; see there).
//
// The kernel runs its own threads: OpenBLAS runs matrices of a few hundred rows (every
// per-step product here) on one core however many it has, so the steps of different batch
// rows go to different threads instead, and the large per-block products are split by rows
// or columns the same way, each thread on its own part (OpenBLAS, where used, single-threaded).
//
// This OpenBLAS (scipy-openblas32's, used by nothing else in the process) starts with one
// thread: rnnkit/_native loads it with OPENBLAS_NUM_THREADS=1. Started with more and set to one
// afterwards, it keeps a worker thread, which spins for a while after start-up: in a
// standalone test on two cores, two threads each calling sgemm on half of a weight gradient
// (128 x 384 x 3584) then took as long as one thread doing both halves (8.4-8.8 ms), against
// 3.8-4.4 ms with one-thread start-up or once the worker had gone idle (after a second). In a
// steady training loop no difference showed (eight alternating process pairs at batch 128,
// within this machine's noise). The set_num_threads(1) below covers a library loaded first by
// someone else.
//
// kThreads is how many threads the kernel runs: set by rnnkit/_native after loading (the
// user's OPENBLAS_NUM_THREADS, else the CPUs the process may run on), else the CPUs.

#pragma once

#include <cblas.h>  // scipy-openblas32's: its functions carry the scipy_ prefix

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "rnn_layout.h"

namespace {

int64_t kThreads = [] {
  scipy_openblas_set_num_threads(1);
  return std::max<int64_t>(1, std::thread::hardware_concurrency());
}();

// fn(i) for i in [0, n), on the calling thread and n - 1 others.
template <class Fn>
void parallel(int64_t n, Fn fn) {
  std::vector<std::thread> workers;
  for (int64_t i = 1; i < n; ++i) workers.emplace_back(fn, i);
  fn(int64_t{0});
  for (auto& w : workers) w.join();
}

// The i-th of n near-equal parts of [0, total).
inline int64_t part(int64_t total, int64_t i, int64_t n) { return total * i / n; }

// n threads meeting, each step of the column-split forward pass (a few microseconds of work
// apart, so they spin; after a while a waiting thread yields its core, in case the one it waits
// for shares it).
class SpinBarrier {
 public:
  explicit SpinBarrier(int64_t n) : n_(n) {}
  void wait() {
    const int64_t generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int64_t spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins)
      if (spins > 4096) std::this_thread::yield();
  }

 private:
  const int64_t n_;
  std::atomic<int64_t> arrived_{0}, generation_{0};
};

// Whether a layer's steps can be split by units: a whole panel of them for every thread.
inline bool columns(const Dims& d) { return kThreads > 1 && d.H % kPanel == 0 && d.H / kPanel >= kThreads; }

// Where the i-th thread's units start, in whole panels.
inline int64_t unit_part(const Dims& d, int64_t i) { return kPanel * part(d.H / kPanel, i, kThreads); }

// Threads for per-step work over B rows: at least 32 rows each.
inline int64_t row_threads(int64_t B) { return std::max<int64_t>(1, std::min<int64_t>(kThreads, B / 32)); }

}  // namespace
