// rnnkit's native CPU kernel: one RNN layer over a whole sequence, forward and backward, as
// XLA FFI custom calls (rnnkit/_native/__init__.py builds, loads and calls them;
// rnnkit/_fused.py has the same formulas in JAX).
//
// Forward: per step one or two small products (h @ W_loop) and one vectorised pass over each
// row for the gates, after the input projection x @ W_in + b_in: with a thread for every
// batch-row range, each thread's rows step by step (they stay in cache: projecting a block
// of steps ahead left them in L3, and inference ran 5-10% slower); with fewer, a block of
// steps at a time, split over every thread, and the steps split by rows where there are 32
// per thread, else (LSTM and GRU) by units, the threads meeting twice a step.
//
// Backward: per step the gates' gradient and one or two small products for the state's
// gradient (split by rows or units as in the forward pass); per block of steps the weight
// gradients and the input's gradient as large products.
//
// Products by a weight matrix run on the microkernel of `Weights` (AVX-512), the weights
// packed once per call; the weight gradients on the same microkernel, both operands packed a
// chunk of rows at a time. On CPUs without AVX-512 every product is OpenBLAS's sgemm, but
// those of one to three rows, which with AVX2 run on a kernel of their own (rows_product).
//
// Layout: time-major, row-major. x [T, B, I], states [B, H], W_in [I, G], W_loop [H, *].
// Blocks are `block_steps` steps long so that their matrices have about 4096 rows.
//
// Masking is TF1's sequence_length: at step t a row b with t >= lengths[b] keeps its state
// and emits zeros, and in the backward pass that row's state gradient passes through.
//
// tanh is XLA:CPU's rational approximation and exp Cephes' polynomial with exponent bits,
// written so the compiler vectorises the row loops. The work is split over the kernel's own
// threads (see kThreads).

#include <cblas.h>  // scipy-openblas32's: its functions carry the scipy_ prefix
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using Arg = ffi::Buffer<ffi::F32>;
using Lengths = ffi::Buffer<ffi::S32>;
using Ret = ffi::ResultBuffer<ffi::F32>;

namespace {

// ------------------------------------------------------------------------------------------
// Elementwise functions.

inline float fast_tanh(float x) {
  const float clamp = 7.90531110763549805f;
  const float small = x;
  x = x > clamp ? clamp : (x < -clamp ? -clamp : x);
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  const float r = p / q;
  return (small < 0.0004f && small > -0.0004f) ? small : r;
}

inline float fast_exp(float x) {
  x = x > 88.3762626647949f ? 88.3762626647949f : (x < -87.3365447504f ? -87.3365447504f : x);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const float n = (x * 1.44269504088896341f + magic) - magic;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

// ------------------------------------------------------------------------------------------
// Matrix helpers (row-major).

// C [m, n] = op(A) @ op(B) + beta * C, op(A) [m, k], op(B) [k, n]; a_t / b_t: the operand is
// stored transposed ([k, m] / [n, k]).
inline void gemm(bool a_t, bool b_t, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  scipy_cblas_sgemm(CblasRowMajor, a_t ? CblasTrans : CblasNoTrans, b_t ? CblasTrans : CblasNoTrans, m, n, k, 1.0f,
                    a, lda, b, ldb, beta, c, ldc);
}

// out[j] += sum over rows of a[r, offset + j], j < n, rows of stride lda.
inline void add_column_sums(const float* a, int64_t rows, int64_t lda, int64_t offset, int64_t n, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = a + r * lda + offset;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] += row[j];
  }
}

// Scratch space every element of which is written before it is read: left uninitialised
// (zeroing the per-block buffers, megabytes per call, showed in profiles).
struct Scratch {
  explicit Scratch(int64_t n) : p(n > 0 ? new float[n] : nullptr) {}
  float* data() const { return p.get(); }
  std::unique_ptr<float[]> p;
};

inline void copy(float* to, const float* from, int64_t n) { std::memcpy(to, from, sizeof(float) * n); }
inline void zero(float* to, int64_t n) { std::memset(to, 0, sizeof(float) * n); }

// Weights multiplied by many times in one call (the loop weights, each step; the input
// projection's, each block), packed once per call. With AVX-512 the products run on the
// microkernel below. OpenBLAS packs B again on every call: at the per-step shapes (64 rows,
// K and N 128 to 512, one core) it ran at 0.7x-0.9x of this kernel's speed in a standalone
// benchmark that alternated the two; at 2048-row input projections, even or slower.
// Without AVX-512 the products are OpenBLAS's, with B stored untransposed (OpenBLAS ran 72
// against about 100 GFLOP/s reading it transposed).
//
// Panels of 32 columns (two vectors), each K x 32 contiguous and zero-padded past N; the
// microkernel keeps a block of up to 8 rows x 32 columns of C in 16 registers, over at most
// 256 of K (a panel's 32 KiB stays in L1) and 64 rows of A at a time (in L2). Threads that
// split a product's columns take whole panels (that split is the same without AVX-512).
constexpr int64_t kPanel = 32;
#if defined(__AVX512F__)
constexpr int64_t kDepth = 256, kRowGroup = 64;

// The first n (clamped to 0..16) lanes of a vector.
inline __mmask16 lanes(int64_t n) { return n >= 16 ? 0xFFFF : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1); }

// c [R, cols] = A [R, K] @ panel [K, 32] (first cols columns), plus c when `add`, plus the
// row vector `bias` (its first cols entries; 32 readable) when given. A's entry (r, k) is
// a[r * lda + k * KStep]: rows of A as they are (KStep 1), or A^T packed [K, 8] (lda 1,
// KStep 8: the weight gradients).
template <int R, int KStep = 1>
inline void micro(int64_t K, const float* a, int64_t lda, const float* panel, float* c, int64_t ldc, bool add,
                  int64_t cols, const float* bias = nullptr) {
  __m512 lo[R], hi[R];
  const __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  const __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) lo[r] = b0, hi[r] = b1;
  for (int64_t k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_load_ps(panel + k * kPanel), b1 = _mm512_load_ps(panel + k * kPanel + 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k * KStep]);
      lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
      hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
    }
  }
  const __mmask16 m0 = lanes(cols), m1 = lanes(cols - 16);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
    if (add) {
      lo[r] = _mm512_add_ps(lo[r], _mm512_maskz_loadu_ps(m0, cr));
      hi[r] = _mm512_add_ps(hi[r], _mm512_maskz_loadu_ps(m1, cr + 16));
    }
    _mm512_mask_storeu_ps(cr, m0, lo[r]);
    _mm512_mask_storeu_ps(cr + 16, m1, hi[r]);
  }
}

// micro for the first `rows` (1 to 8) rows of A.
template <int KStep = 1>
inline void micro_rows(int64_t rows, int64_t K, const float* a, int64_t lda, const float* panel, float* c,
                       int64_t ldc, bool add, int64_t cols, const float* bias = nullptr) {
  switch (rows) {
    case 8: return micro<8, KStep>(K, a, lda, panel, c, ldc, add, cols, bias);
    case 7: return micro<7, KStep>(K, a, lda, panel, c, ldc, add, cols, bias);
    case 6: return micro<6, KStep>(K, a, lda, panel, c, ldc, add, cols, bias);
    case 5: return micro<5, KStep>(K, a, lda, panel, c, ldc, add, cols, bias);
    case 4: return micro<4, KStep>(K, a, lda, panel, c, ldc, add, cols, bias);
    case 3: return micro<3, KStep>(K, a, lda, panel, c, ldc, add, cols, bias);
    case 2: return micro<2, KStep>(K, a, lda, panel, c, ldc, add, cols, bias);
    default: return micro<1, KStep>(K, a, lda, panel, c, ldc, add, cols, bias);
  }
}
#elif defined(__AVX2__) && defined(__FMA__)
#define RNNKIT_AVX2_ROWS 1

// The first n (clamped to 0..8) lanes of a vector, as maskload / maskstore take them.
inline __m256i lanes8(int64_t n) {
  const int32_t k = static_cast<int32_t>(std::clamp<int64_t>(n, 0, 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Without AVX-512 the products are OpenBLAS's, except those of one to three rows (a batch of
// one to three stepping alone, as in batch-1 inference), for which OpenBLAS is slow: on an AVX2
// machine (AMD EPYC, two cores) batch-1 inference of the seed's model ran 1.5x faster with
// this kernel (benchmarks/native_ab.py pairs, RESULTS.md). rows_product computes columns
// [n0, n1) of c [R, N] = A [R, K] @ B [K, N] (row-major, row stride ldb), plus c when `add`,
// plus `bias` [N] when given; 32 columns at a time in 4R accumulators (the last chunk masked),
// each entry summed over k in order.
template <int R, bool Tail>
inline void rows_chunk(int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                       bool add, int64_t cols, const float* bias) {
  __m256i m[4];
  __m256 acc[R][4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    m[j] = lanes8(cols - 8 * j);
    const __m256 start = bias ? _mm256_maskload_ps(bias + 8 * j, m[j]) : _mm256_setzero_ps();
#pragma GCC unroll 3
    for (int r = 0; r < R; ++r) acc[r][j] = start;
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* w = b + k * ldb;
    __m256 wj[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) wj[j] = Tail ? _mm256_maskload_ps(w + 8 * j, m[j]) : _mm256_loadu_ps(w + 8 * j);
#pragma GCC unroll 3
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + k);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_fmadd_ps(av, wj[j], acc[r][j]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
#pragma GCC unroll 3
    for (int r = 0; r < R; ++r) {
      float* cr = c + r * ldc + 8 * j;
      if (add) acc[r][j] = _mm256_add_ps(acc[r][j], _mm256_maskload_ps(cr, m[j]));
      _mm256_maskstore_ps(cr, m[j], acc[r][j]);
    }
  }
}

template <int R>
inline void rows_product(int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                         bool add, int64_t n0, int64_t n1, const float* bias) {
  for (int64_t n = n0; n < n1; n += 32) {
    const int64_t cols = std::min<int64_t>(32, n1 - n);
    const float* bn = bias ? bias + n : nullptr;
    if (cols == 32)
      rows_chunk<R, false>(K, a, lda, b + n, ldb, c + n, ldc, add, cols, bn);
    else
      rows_chunk<R, true>(K, a, lda, b + n, ldb, c + n, ldc, add, cols, bn);
  }
}
#endif

struct FreeFloats {
  void operator()(float* p) const { std::free(p); }
};

class Weights {
 public:
  Weights() = default;
  // B [K, N]: w itself (row stride ldw) or, when `transpose`, the transpose of w [N, K].
  // With `bias` [N], every product that does not accumulate adds it to each row of c (the
  // input projection's x @ W_in + b_in); it is kept zero-padded to whole panels.
  Weights(const float* w, int64_t ldw, int64_t K, int64_t N, bool transpose, const float* bias = nullptr)
      : K_(K), N_(N) {
    auto at = [&](int64_t k, int64_t n) { return transpose ? w[n * ldw + k] : w[k * ldw + n]; };
#if defined(__AVX512F__)
    const int64_t panels = (N + kPanel - 1) / kPanel;
    if (bias) {
      bias_.assign(panels * kPanel, 0.0f);
      std::copy(bias, bias + N, bias_.begin());
    }
    // Narrower B (a layer's input of one feature) would be mostly padding.
    if (N >= kPanel / 2)
      store_.reset(static_cast<float*>(std::aligned_alloc(64, sizeof(float) * panels * K * kPanel + 64)));
    if (store_) {
      float* p = store_.get();
      for (int64_t q = 0; q < panels; ++q)
        for (int64_t k = 0; k < K; ++k)
          for (int64_t j = 0; j < kPanel; ++j) {
            const int64_t n = q * kPanel + j;
            p[(q * K + k) * kPanel + j] = n < N ? at(k, n) : 0.0f;
          }
      packed_ = true;
      return;
    }
#endif
    if (bias) bias_.assign(bias, bias + N);
    plain_ = w, ld_ = ldw, transposed_ = transpose;
    if (transpose) store_.reset(static_cast<float*>(std::malloc(sizeof(float) * K * N + 64)));
    if (store_) {  // else (out of memory) OpenBLAS reads w transposed in place
      for (int64_t k = 0; k < K; ++k)
        for (int64_t n = 0; n < N; ++n) store_.get()[k * N + n] = at(k, n);
      plain_ = store_.get(), ld_ = N, transposed_ = false;
    }
  }

  // c [m, N] = a [m, K] @ B, plus c when `accumulate`, else plus the bias (if any) on every
  // row. With the microkernel the bias starts its accumulators: no pass writing it into c first.
  void mul(int64_t m, const float* a, int64_t lda, bool accumulate, float* c, int64_t ldc) const {
    mul_cols(m, a, lda, accumulate, c, ldc, 0, N_);
  }

  // mul for the columns [n0, n1) of c only (c still points at column 0). n0 must be a multiple
  // of kPanel, and n1 one or N: threads splitting the columns then write disjoint panels.
  void mul_cols(int64_t m, const float* a, int64_t lda, bool accumulate, float* c, int64_t ldc, int64_t n0,
                int64_t n1) const {
    if (m <= 0 || n1 <= n0) return;
    const bool with_bias = !bias_.empty() && !accumulate;
#if defined(__AVX512F__)
    if (packed_) {
      const int64_t q0 = n0 / kPanel, q1 = (n1 + kPanel - 1) / kPanel;
      for (int64_t i0 = 0; i0 < m; i0 += kRowGroup) {
        const int64_t rows = std::min(kRowGroup, m - i0);
        for (int64_t k0 = 0; k0 < K_ || k0 == 0; k0 += kDepth) {
          const int64_t depth = std::min(kDepth, K_ - k0);
          const bool add = accumulate || k0 > 0;
          for (int64_t q = q0; q < q1; ++q) {
            const float* panel = store_.get() + (q * K_ + k0) * kPanel;
            const int64_t cols = std::min(kPanel, N_ - q * kPanel);
            const float* bq = with_bias && k0 == 0 ? bias_.data() + q * kPanel : nullptr;
            for (int64_t r = 0; r < rows; r += 8)
              micro_rows(std::min<int64_t>(8, rows - r), depth, a + (i0 + r) * lda + k0, lda, panel,
                         c + (i0 + r) * ldc + q * kPanel, ldc, add, cols, bq);
          }
        }
      }
      return;
    }
#endif
#if defined(RNNKIT_AVX2_ROWS)
    if (m <= 3 && K_ > 0 && !transposed_) {
      const float* bias = with_bias ? bias_.data() : nullptr;
      if (m == 3) rows_product<3>(K_, a, lda, plain_, ld_, c, ldc, accumulate, n0, n1, bias);
      if (m == 2) rows_product<2>(K_, a, lda, plain_, ld_, c, ldc, accumulate, n0, n1, bias);
      if (m == 1) rows_product<1>(K_, a, lda, plain_, ld_, c, ldc, accumulate, n0, n1, bias);
      return;
    }
#endif
    const int64_t n = n1 - n0;
    c += n0;
    if (with_bias) {  // OpenBLAS: the bias written into c, then the product added to it
      for (int64_t i = 0; i < m; ++i) copy(c + i * ldc, bias_.data() + n0, n);
      accumulate = true;
    }
    if (K_ == 0) {
      for (int64_t i = 0; i < m && !accumulate; ++i) zero(c + i * ldc, n);
      return;
    }
    const float* b = transposed_ ? plain_ + n0 * ld_ : plain_ + n0;
    gemm(false, transposed_, m, n, K_, a, lda, b, ld_, accumulate ? 1.0f : 0.0f, c, ldc);
  }

 private:
  int64_t K_ = 0, N_ = 0, ld_ = 0;
  std::vector<float> bias_;  // empty: no bias
  const float* plain_ = nullptr;  // when not packed: B (row stride ld_), or B^T if transposed_
  std::unique_ptr<float, FreeFloats> store_;
  bool packed_ = false, transposed_ = false;
};

inline bool valid(const int32_t* lengths, int64_t t, int64_t b) { return t < lengths[b]; }

struct Dims {
  int64_t T, B, I, H, G;
};

int64_t block_steps(const Dims& d) {
  const int64_t rows = 4096;
  return std::max<int64_t>(1, std::min<int64_t>(d.T, (rows + d.B - 1) / std::max<int64_t>(d.B, 1)));
}

// ------------------------------------------------------------------------------------------
// Threads. The kernel does its own: OpenBLAS runs matrices of a few hundred rows (every
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

#if defined(__AVX512F__)
// Rows of A and D packed at a time for a weight gradient.
constexpr int64_t kGradDepth = 256;

// Per-thread buffers for the packed operands, kept for the thread's later calls.
struct PackBuffer {
  float* get(int64_t n) {
    if (n > size) {
      p.reset(static_cast<float*>(std::aligned_alloc(64, sizeof(float) * ((n + 15) / 16 * 16))));
      size = p ? n : 0;
    }
    return p.get();
  }
  std::unique_ptr<float, FreeFloats> p;
  int64_t size = 0;
};

// dW [m, cols] += A^T @ D, a chunk of kGradDepth rows at a time: A's rows packed in groups of
// 8 columns ([depth, 8] each), then D a 32-column panel at a time ([depth, 32], in L1 while
// every group of A passes over it). Packing both keeps the microkernel's reads contiguous:
// read in place, D's rows (3 KiB apart for the GRU) fall on a few of L1's sets and A's too.
// On the seed model's shapes (one thread's half of the columns, 3 584 rows) it ran 73-132
// GFLOP/s against OpenBLAS's 56-128 in the same standalone loop, and a whole training step
// took 4% less in alternating pairs (benchmarks/native_ab.py, batches 128 and 1024).
// With `sums`, D's column sums are added to it (the bias gradient) as D is packed.
// Returns false (nothing done) when the buffers can't be had.
inline bool weight_grad_packed(int64_t rows, const float* a, int64_t m, int64_t lda, const float* d, int64_t ldd,
                               int64_t cols, float* dw, int64_t ldw, float* sums) {
  thread_local PackBuffer a_buf, d_buf;
  const int64_t groups = (m + 7) / 8, panels = (cols + kPanel - 1) / kPanel;
  float* ap = a_buf.get(groups * kGradDepth * 8);
  float* dp = d_buf.get(kGradDepth * kPanel);
  if (!ap || !dp) return false;
  for (int64_t r0 = 0; r0 < rows; r0 += kGradDepth) {
    const int64_t depth = std::min(kGradDepth, rows - r0);
    for (int64_t g = 0; g < groups; ++g) {
      const __mmask16 mask = lanes(m - g * 8);
      float* to = ap + g * kGradDepth * 8;
      for (int64_t k = 0; k < depth; ++k)
        _mm256_store_ps(to + k * 8, _mm512_castps512_ps256(_mm512_maskz_loadu_ps(mask, a + (r0 + k) * lda + g * 8)));
    }
    for (int64_t q = 0; q < panels; ++q) {
      const int64_t w = std::min(kPanel, cols - q * kPanel);
      const __mmask16 m0 = lanes(w), m1 = lanes(w - 16);
      __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
      for (int64_t k = 0; k < depth; ++k) {
        const float* from = d + (r0 + k) * ldd + q * kPanel;
        const __m512 v0 = _mm512_maskz_loadu_ps(m0, from), v1 = _mm512_maskz_loadu_ps(m1, from + 16);
        _mm512_store_ps(dp + k * kPanel, v0);
        _mm512_store_ps(dp + k * kPanel + 16, v1);
        s0 = _mm512_add_ps(s0, v0), s1 = _mm512_add_ps(s1, v1);
      }
      if (sums) {
        float* to = sums + q * kPanel;
        _mm512_mask_storeu_ps(to, m0, _mm512_add_ps(s0, _mm512_maskz_loadu_ps(m0, to)));
        _mm512_mask_storeu_ps(to + 16, m1, _mm512_add_ps(s1, _mm512_maskz_loadu_ps(m1, to + 16)));
      }
      for (int64_t g = 0; g < groups; ++g)  // dW's rows g*8.. += (their columns of A)^T @ panel
        micro_rows<8>(std::min<int64_t>(8, m - g * 8), depth, ap + g * kGradDepth * 8, 1, dp,
                      dw + g * 8 * ldw + q * kPanel, ldw, true, w);
    }
  }
  return true;
}
#endif

// A weight gradient over a block, split by columns between threads: the i-th of n column
// ranges of dW [m, cols] (leading dimension ldw) += A^T @ D, A [rows, m] and D [rows, cols]
// stored with leading dimensions lda and ldd.
// With `sums` [cols], the same column range gets D's column sums added (a bias's gradient).
inline void add_weight_grad(int64_t i, int64_t n, int64_t rows, const float* a, int64_t m, int64_t lda,
                            const float* d, int64_t ldd, int64_t cols, float* dw, int64_t ldw,
                            float* sums = nullptr) {
  const int64_t j0 = part(cols, i, n), j1 = part(cols, i + 1, n);
  if (j1 == j0 || rows == 0) return;
#if defined(__AVX512F__)
  if (m > 0 && weight_grad_packed(rows, a, m, lda, d + j0, ldd, j1 - j0, dw + j0, ldw, sums ? sums + j0 : nullptr))
    return;
#endif
  if (m > 0) gemm(true, false, m, j1 - j0, rows, a, lda, d + j0, ldd, 1.0f, dw + j0, ldw);
  if (sums) add_column_sums(d, rows, ldd, j0, j1 - j0, sums + j0);
}

// Whether a layer's steps can be split by units: a whole panel of them for every thread.
inline bool columns(const Dims& d) { return kThreads > 1 && d.H % kPanel == 0 && d.H / kPanel >= kThreads; }

// Where the i-th thread's units start, in whole panels.
inline int64_t unit_part(const Dims& d, int64_t i) { return kPanel * part(d.H / kPanel, i, kThreads); }

// Threads for per-step work over B rows: at least 32 rows each.
inline int64_t row_threads(int64_t B) { return std::max<int64_t>(1, std::min<int64_t>(kThreads, B / 32)); }

// ------------------------------------------------------------------------------------------
// The cells. Each kind holds its weights, state and saved values and provides, for the rows
// [b0, b1) of the batch (the rows are independent, so threads take disjoint ranges):
//   fwd_step(t, z, out_t, b0, b1): z [B, G] holds the step's input projection; computes the step;
//   bwd_step(t, d_out_t, dz, dloop, b0, b1): writes the step's gradient of the projection into
//       dz [B, G] (and, where the loop matmul's output gradient differs, into dloop) and steps
//       the carried state gradient back;
//   block_grads(t0, steps, dz, dloop, i, n): adds a block's loop weight gradients, the i-th of
//       n column ranges of each.
// Saved values (training) are written only when `save`.

struct Common {
  Dims d;
  const int32_t* len;
  bool save;
};

// Rows past their length keep the carried gradient (their state passed through); the others
// take the step's; then the step's becomes the carried one.
inline void step_back(float* carried, const float* stepped, const int32_t* len, int64_t t, int64_t b0, int64_t b1,
                      int64_t H, int64_t k0 = 0, int64_t k1 = -1) {
  if (k1 < 0) k1 = H;
  for (int64_t b = b0; b < b1; ++b)
    if (valid(len, t, b)) copy(carried + b * H + k0, stepped + b * H + k0, k1 - k0);
}

// BasicRNNCell: h' = tanh(xp + h @ Wh). Saved: h' [T, B, H] (before masking) and previous h.
struct RnnKind {
  Common c;
  Weights loop;  // forward: wh; backward: its transpose
  float *saved_h, *prev_h, *d_wh;
  std::vector<float> h, dh, dh_step;

  static constexpr bool kColumns = false;

  void begin_block(int64_t) {}

  void fwd_step(int64_t t, float* z, float* out, int64_t b0, int64_t b1) {
    const int64_t B = c.d.B, H = c.d.H, n = b1 - b0;
    loop.mul(n, h.data() + b0 * H, H, true, z + b0 * H, H);
    if (c.save) copy(prev_h + (t * B + b0) * H, h.data() + b0 * H, n * H);
    for (int64_t b = b0; b < b1; ++b) {
      float* zr = z + b * H;
      float* hb = h.data() + b * H;
      float* ob = out + b * H;
      const bool v = valid(c.len, t, b);
#pragma omp simd
      for (int64_t k = 0; k < H; ++k) {
        const float nh = fast_tanh(zr[k]);
        zr[k] = nh;
        ob[k] = v ? nh : 0.0f;
        hb[k] = v ? nh : hb[k];
      }
    }
  }

  // Where step t's activations are saved, [B, G], or null (inference). When saving, forward
  // hands fwd_step this slot as z, so the activations computed in place are the saved ones.
  float* slot(int64_t t) const { return c.save ? saved_h + t * c.d.B * c.d.G : nullptr; }

  void bwd_step(int64_t t, const float* d_out, float* dz, float*, int64_t b0, int64_t b1) {
    const int64_t B = c.d.B, H = c.d.H, n = b1 - b0;
    const float* hs = saved_h + t * B * H;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t o = b * H;
      const bool v = valid(c.len, t, b);
#pragma omp simd
      for (int64_t k = 0; k < H; ++k)
        dz[o + k] = v ? (dh[o + k] + d_out[o + k]) * (1.0f - hs[o + k] * hs[o + k]) : 0.0f;
    }
    loop.mul(n, dz + b0 * H, H, false, dh_step.data() + b0 * H, H);
    step_back(dh.data(), dh_step.data(), c.len, t, b0, b1, H);
  }

  void block_grads(int64_t t0, int64_t steps, const float* dz, const float*, int64_t i, int64_t n) {
    const int64_t rows = steps * c.d.B, H = c.d.H;
    add_weight_grad(i, n, rows, prev_h + t0 * c.d.B * H, H, H, dz, H, H, d_wh, H);
  }
};

// LSTM (TF1's BasicLSTMCell and LSTMCell, gates i, j, f, o):
//   i, j, f, o = split(xp + h @ Wh);  c' = c * sig(f + forget_bias) + sig(i) * tanh(j)
//   h' = tanh(c') * sig(o)
// Saved: acts [T, B, 4H] = (sig(i), tanh(j), sig(f + fb), sig(o)), tanh(c') [T, B, H], and the
// previous c and h.
struct LstmKind {
  Common c;
  Weights loop;  // forward: wh; backward: its transpose
  float forget_bias;
  float *acts, *tanh_c, *prev_c, *prev_h, *d_wh;
  std::vector<float> cs, h, dc, dh, dh_step;

  static constexpr bool kColumns = true;

  void begin_block(int64_t) {}

  void fwd_step(int64_t t, float* z, float* out, int64_t b0, int64_t b1) {
    const int64_t B = c.d.B, H = c.d.H, G = c.d.G, n = b1 - b0;
    loop.mul(n, h.data() + b0 * H, H, true, z + b0 * G, G);
    if (c.save) {
      copy(prev_c + (t * B + b0) * H, cs.data() + b0 * H, n * H);
      copy(prev_h + (t * B + b0) * H, h.data() + b0 * H, n * H);
    }
    cell(t, z, out, b0, b1, 0, H);
  }

  // The step for every row and the units [u0, u1) (see forward's column split).
  void fwd_cols(int64_t t, float* z, float* out, int64_t u0, int64_t u1, SpinBarrier& all) {
    const int64_t B = c.d.B, H = c.d.H, G = c.d.G;
    for (int64_t g = 0; g < 4; ++g) loop.mul_cols(B, h.data(), H, true, z, G, g * H + u0, g * H + u1);
    for (int64_t b = 0; b < B && c.save; ++b) {
      copy(prev_c + (t * B + b) * H + u0, cs.data() + b * H + u0, u1 - u0);
      copy(prev_h + (t * B + b) * H + u0, h.data() + b * H + u0, u1 - u0);
    }
    all.wait();  // every product has read h before any unit of it changes
    cell(t, z, out, 0, B, u0, u1);
    all.wait();  // the new h is whole before the next step's products read it
  }

  // The gates and the new state of rows [b0, b1), units [k0, k1), from the step's products in z.
  void cell(int64_t t, float* z, float* out, int64_t b0, int64_t b1, int64_t k0, int64_t k1) {
    const int64_t B = c.d.B, H = c.d.H, G = c.d.G;
    for (int64_t b = b0; b < b1; ++b) {
      float* zi = z + b * G;
      float *zj = zi + H, *zf = zi + 2 * H, *zo = zi + 3 * H;
      float* cb = cs.data() + b * H;
      float* hb = h.data() + b * H;
      float* ob = out + b * H;
      float* tc = c.save ? tanh_c + (t * B + b) * H : nullptr;
      const bool v = valid(c.len, t, b);
      const float fb = forget_bias;
#pragma omp simd
      for (int64_t k = k0; k < k1; ++k) {
        const float si = sigmoid(zi[k]), tj = fast_tanh(zj[k]), sf = sigmoid(zf[k] + fb), so = sigmoid(zo[k]);
        const float new_c = cb[k] * sf + si * tj;
        const float tnc = fast_tanh(new_c);
        const float new_h = tnc * so;
        zi[k] = si, zj[k] = tj, zf[k] = sf, zo[k] = so;
        if (tc) tc[k] = tnc;
        ob[k] = v ? new_h : 0.0f;
        cb[k] = v ? new_c : cb[k];
        hb[k] = v ? new_h : hb[k];
      }
    }
  }

  float* slot(int64_t t) const { return c.save ? acts + t * c.d.B * c.d.G : nullptr; }

  void bwd_step(int64_t t, const float* d_out, float* dz, float*, int64_t b0, int64_t b1) {
    const int64_t H = c.d.H, G = c.d.G, n = b1 - b0;
    cell_back(t, d_out, dz, b0, b1, 0, H);
    loop.mul(n, dz + b0 * G, G, false, dh_step.data() + b0 * H, H);
    step_back(dh.data(), dh_step.data(), c.len, t, b0, b1, H);
  }

  // The step back for every row and the units [u0, u1): each unit's gradient needs only its
  // own carried values, so one meeting a step (dz whole before the product reads it).
  void bwd_cols(int64_t t, const float* d_out, float* dz, float*, int64_t u0, int64_t u1, SpinBarrier& all) {
    const int64_t B = c.d.B, H = c.d.H, G = c.d.G;
    cell_back(t, d_out, dz, 0, B, u0, u1);
    all.wait();
    loop.mul_cols(B, dz, G, false, dh_step.data(), H, u0, u1);
    step_back(dh.data(), dh_step.data(), c.len, t, 0, B, H, u0, u1);
  }

  // The gates' gradients into dz and the cell's carried back, rows [b0, b1), units [k0, k1).
  void cell_back(int64_t t, const float* d_out, float* dz, int64_t b0, int64_t b1, int64_t k0, int64_t k1) {
    const int64_t B = c.d.B, H = c.d.H, G = c.d.G;
    for (int64_t b = b0; b < b1; ++b) {
      float* dzb = dz + b * G;
      if (!valid(c.len, t, b)) {  // the state passed through, and so does its gradient (dc stays)
        for (int64_t g = 0; g < 4; ++g) zero(dzb + g * H + k0, k1 - k0);
        continue;
      }
      const float* a = acts + (t * B + b) * G;
      const float *si = a, *tj = a + H, *sf = a + 2 * H, *so = a + 3 * H;
      const float* tc = tanh_c + (t * B + b) * H;
      const float* cp = prev_c + (t * B + b) * H;
      const float* dob = d_out + b * H;
      float* dcb = dc.data() + b * H;
      const float* dhb = dh.data() + b * H;
#pragma omp simd
      for (int64_t k = k0; k < k1; ++k) {
        const float dhk = dhb[k] + dob[k];
        const float dso = dhk * tc[k];
        const float dck = dcb[k] + dhk * so[k] * (1.0f - tc[k] * tc[k]);
        dzb[k] = dck * tj[k] * si[k] * (1.0f - si[k]);
        dzb[H + k] = dck * si[k] * (1.0f - tj[k] * tj[k]);
        dzb[2 * H + k] = dck * cp[k] * sf[k] * (1.0f - sf[k]);
        dzb[3 * H + k] = dso * so[k] * (1.0f - so[k]);
        dcb[k] = dck * sf[k];
      }
    }
  }

  void block_grads(int64_t t0, int64_t steps, const float* dz, const float*, int64_t i, int64_t n) {
    const int64_t rows = steps * c.d.B, H = c.d.H, G = c.d.G;
    add_weight_grad(i, n, rows, prev_h + t0 * c.d.B * H, H, H, dz, G, G, d_wh, G);
  }
};

// GRU, TF1's formula (reset before the candidate's matmul); the projection holds
// (x @ gates + bias (r, u), x @ candidate + bias), G = 3H:
//   r, u = sig(xp[:2H] + h @ Wg);  c = tanh(xp[2H:] + (r * h) @ Wc);  h' = u * h + (1 - u) * c
// Saved: (r, u, c) [T, B, 3H] and the previous h.
struct GruKind {
  Common c;
  Weights gates, cand;  // forward: wg, wc; backward: their transposes
  float *saved, *prev_h, *d_wg, *d_wc;
  std::vector<float> h, rh, dh, dh_step, dhv, drh;
  // Backward: r * h for the block's steps [steps, B, H], the candidate's weight gradient's
  // input, written by bwd_step beside the values it is made of (each thread its rows) rather
  // than by every thread again for all rows in block_grads; t0 is the block's first step.
  std::vector<float> rh_block;
  int64_t t0 = 0;

  static constexpr bool kColumns = true;

  void begin_block(int64_t first) { t0 = first; }

  void fwd_step(int64_t t, float* z, float* out, int64_t b0, int64_t b1) {
    const int64_t B = c.d.B, H = c.d.H, G = c.d.G, n = b1 - b0;
    gates.mul(n, h.data() + b0 * H, H, true, z + b0 * G, G);
    reset(z, b0, b1, 0, H);
    cand.mul(n, rh.data() + b0 * H, H, true, z + b0 * G + 2 * H, G);
    if (c.save) copy(prev_h + (t * B + b0) * H, h.data() + b0 * H, n * H);
    update(t, z, out, b0, b1, 0, H);
  }

  // The step for every row and the units [u0, u1) (see forward's column split).
  void fwd_cols(int64_t t, float* z, float* out, int64_t u0, int64_t u1, SpinBarrier& all) {
    const int64_t B = c.d.B, H = c.d.H, G = c.d.G;
    gates.mul_cols(B, h.data(), H, true, z, G, u0, u1);
    gates.mul_cols(B, h.data(), H, true, z, G, H + u0, H + u1);
    reset(z, 0, B, u0, u1);
    for (int64_t b = 0; b < B && c.save; ++b) copy(prev_h + (t * B + b) * H + u0, h.data() + b * H + u0, u1 - u0);
    all.wait();  // r * h is whole, and every product has read h, before the candidate's
    cand.mul_cols(B, rh.data(), H, true, z + 2 * H, G, u0, u1);
    update(t, z, out, 0, B, u0, u1);
    all.wait();  // the new h is whole before the next step's products read it
  }

  // r and u (sigmoids in place) and r * h, rows [b0, b1), units [k0, k1).
  void reset(float* z, int64_t b0, int64_t b1, int64_t k0, int64_t k1) {
    const int64_t H = c.d.H, G = c.d.G;
    for (int64_t b = b0; b < b1; ++b) {
      float* g = z + b * G;
      const float* hb = h.data() + b * H;
      float* rhb = rh.data() + b * H;
#pragma omp simd
      for (int64_t k = k0; k < k1; ++k) g[k] = sigmoid(g[k]), g[H + k] = sigmoid(g[H + k]);
#pragma omp simd
      for (int64_t k = k0; k < k1; ++k) rhb[k] = g[k] * hb[k];
    }
  }

  // The candidate (tanh in place) and the new state, rows [b0, b1), units [k0, k1).
  void update(int64_t t, float* z, float* out, int64_t b0, int64_t b1, int64_t k0, int64_t k1) {
    const int64_t H = c.d.H, G = c.d.G;
    for (int64_t b = b0; b < b1; ++b) {
      float* g = z + b * G;
      const float* u = g + H;
      float* cz = g + 2 * H;
      float* hb = h.data() + b * H;
      float* ob = out + b * H;
      const bool v = valid(c.len, t, b);
#pragma omp simd
      for (int64_t k = k0; k < k1; ++k) {
        const float ck = fast_tanh(cz[k]);
        cz[k] = ck;
        const float new_h = u[k] * hb[k] + (1.0f - u[k]) * ck;
        ob[k] = v ? new_h : 0.0f;
        hb[k] = v ? new_h : hb[k];
      }
    }
  }

  float* slot(int64_t t) const { return c.save ? saved + t * c.d.B * c.d.G : nullptr; }

  void bwd_step(int64_t t, const float* d_out, float* dz, float*, int64_t b0, int64_t b1) {
    const int64_t H = c.d.H, G = c.d.G, n = b1 - b0;
    back_candidate(t, d_out, dz, b0, b1, 0, H);
    cand.mul(n, dz + b0 * G + 2 * H, G, false, drh.data() + b0 * H, H);
    back_gates(t, dz, b0, b1, 0, H);
    gates.mul(n, dz + b0 * G, G, true, dh_step.data() + b0 * H, H);
    step_back(dh.data(), dh_step.data(), c.len, t, b0, b1, H);
  }

  // The step back for every row and the units [u0, u1), meeting twice (the candidate's and
  // then the gates' gradients whole before the products read them).
  void bwd_cols(int64_t t, const float* d_out, float* dz, float*, int64_t u0, int64_t u1, SpinBarrier& all) {
    const int64_t B = c.d.B, H = c.d.H, G = c.d.G;
    back_candidate(t, d_out, dz, 0, B, u0, u1);
    all.wait();
    cand.mul_cols(B, dz + 2 * H, G, false, drh.data(), H, u0, u1);
    back_gates(t, dz, 0, B, u0, u1);
    all.wait();
    gates.mul_cols(B, dz, G, true, dh_step.data(), H, u0, u1);
    step_back(dh.data(), dh_step.data(), c.len, t, 0, B, H, u0, u1);
  }

  // The candidate's gradient, and dh of valid rows; rows [b0, b1), units [k0, k1).
  void back_candidate(int64_t t, const float* d_out, float* dz, int64_t b0, int64_t b1, int64_t k0, int64_t k1) {
    const int64_t B = c.d.B, H = c.d.H, G = c.d.G;
    const float* s = saved + t * B * G;
    for (int64_t b = b0; b < b1; ++b) {
      const float *u = s + b * G + H, *cc = s + b * G + 2 * H;
      float* dcz = dz + b * G + 2 * H;
      float* dhb = dhv.data() + b * H;
      const float* carried = dh.data() + b * H;
      const float* dob = d_out + b * H;
      const bool v = valid(c.len, t, b);
#pragma omp simd
      for (int64_t k = k0; k < k1; ++k) {
        const float dhk = v ? carried[k] + dob[k] : 0.0f;
        dhb[k] = dhk;
        dcz[k] = dhk * (1.0f - u[k]) * (1.0f - cc[k] * cc[k]);
      }
    }
  }

  // The gates' gradients (from r * h's, drh), r * h for the weight gradient, and the previous
  // state's gradient but for the gates' product; rows [b0, b1), units [k0, k1).
  void back_gates(int64_t t, float* dz, int64_t b0, int64_t b1, int64_t k0, int64_t k1) {
    const int64_t B = c.d.B, H = c.d.H, G = c.d.G;
    const float* s = saved + t * B * G;
    const float* hp = prev_h + t * B * H;
    for (int64_t b = b0; b < b1; ++b) {
      const float *r = s + b * G, *u = r + H, *cc = r + 2 * H;
      const float* hb = hp + b * H;
      const float* dhb = dhv.data() + b * H;
      const float* drhb = drh.data() + b * H;
      float* dgz = dz + b * G;
      float* dprev = dh_step.data() + b * H;
      float* rhb = rh_block.data() + ((t - t0) * B + b) * H;
#pragma omp simd
      for (int64_t k = k0; k < k1; ++k) {
        rhb[k] = r[k] * hb[k];
        dgz[k] = drhb[k] * hb[k] * r[k] * (1.0f - r[k]);
        dgz[H + k] = dhb[k] * (hb[k] - cc[k]) * u[k] * (1.0f - u[k]);
        dprev[k] = dhb[k] * u[k] + drhb[k] * r[k];
      }
    }
  }

  void block_grads(int64_t t0, int64_t steps, const float* dz, const float*, int64_t i, int64_t n) {
    const int64_t rows = steps * c.d.B, H = c.d.H, G = c.d.G;
    add_weight_grad(i, n, rows, prev_h + t0 * c.d.B * H, H, H, dz, G, 2 * H, d_wg, 2 * H);
    add_weight_grad(i, n, rows, rh_block.data(), H, H, dz + 2 * H, G, H, d_wc, H);
  }
};

// GRU, cuDNN's formula (reset after); the projection holds (x @ gates + bias, x @ input
// projection + bias), G = 3H; W_hidden [H, 3H], b_hidden [H]:
//   zh = h @ W_hidden;  r, u = sig(xp[:2H] + zh[:2H]);  hidden = zh[2H:] + b_hidden
//   c = tanh(xp[2H:] + r * hidden);  h' = (1 - u) * c + u * h
// Saved: (r, u, c, hidden) [T, B, 4H] and the previous h.
struct GruAfterKind {
  Common c;
  Weights hidden;  // forward: w_hidden; backward: its transpose
  const float* b_hidden;
  float *saved, *prev_h, *d_w_hidden, *d_b_hidden;
  std::vector<float> h, zh, dh, dh_step;

  static constexpr bool kColumns = false;

  void begin_block(int64_t) {}

  float* slot(int64_t) const { return nullptr; }  // saves (r, u, c, hidden), not the projection

  void fwd_step(int64_t t, float* z, float* out, int64_t b0, int64_t b1) {
    const int64_t B = c.d.B, H = c.d.H, G = c.d.G, n = b1 - b0;
    hidden.mul(n, h.data() + b0 * H, H, false, zh.data() + b0 * G, G);
    if (c.save) copy(prev_h + (t * B + b0) * H, h.data() + b0 * H, n * H);
    std::vector<float> keep(c.save ? 0 : 4 * H);  // the gates, when not saved
    for (int64_t b = b0; b < b1; ++b) {
      const float* x = z + b * G;
      const float* zb = zh.data() + b * G;
      float* hb = h.data() + b * H;
      float* ob = out + b * H;
      float* s = c.save ? saved + (t * B + b) * 4 * H : keep.data();
      const bool v = valid(c.len, t, b);
#pragma omp simd
      for (int64_t k = 0; k < H; ++k) {
        const float r = sigmoid(x[k] + zb[k]), u = sigmoid(x[H + k] + zb[H + k]);
        const float hidden = zb[2 * H + k] + b_hidden[k];
        const float cc = fast_tanh(x[2 * H + k] + r * hidden);
        s[k] = r, s[H + k] = u, s[2 * H + k] = cc, s[3 * H + k] = hidden;
        const float new_h = (1.0f - u) * cc + u * hb[k];
        ob[k] = v ? new_h : 0.0f;
        hb[k] = v ? new_h : hb[k];
      }
    }
  }

  void bwd_step(int64_t t, const float* d_out, float* dz, float* dloop, int64_t b0, int64_t b1) {
    const int64_t B = c.d.B, H = c.d.H, G = c.d.G, n = b1 - b0;
    for (int64_t b = b0; b < b1; ++b) {
      const float* s = saved + (t * B + b) * 4 * H;
      const float *r = s, *u = s + H, *cc = s + 2 * H, *hidden = s + 3 * H;
      const float* hb = prev_h + (t * B + b) * H;
      const float* dob = d_out + b * H;
      const float* carried = dh.data() + b * H;
      float* dx = dz + b * G;
      float* dl = dloop + b * G;
      float* dprev = dh_step.data() + b * H;
      const bool v = valid(c.len, t, b);
#pragma omp simd
      for (int64_t k = 0; k < H; ++k) {
        const float dhk = v ? carried[k] + dob[k] : 0.0f;
        const float dcz = dhk * (1.0f - u[k]) * (1.0f - cc[k] * cc[k]);
        const float dr = dcz * hidden[k] * r[k] * (1.0f - r[k]);
        const float du = dhk * (hb[k] - cc[k]) * u[k] * (1.0f - u[k]);
        dx[k] = dr, dx[H + k] = du, dx[2 * H + k] = dcz;
        dl[k] = dr, dl[H + k] = du, dl[2 * H + k] = dcz * r[k];
        dprev[k] = dhk * u[k];
      }
    }
    hidden.mul(n, dloop + b0 * G, G, true, dh_step.data() + b0 * H, H);
    step_back(dh.data(), dh_step.data(), c.len, t, b0, b1, H);
  }

  void block_grads(int64_t t0, int64_t steps, const float*, const float* dloop, int64_t i, int64_t n) {
    const int64_t rows = steps * c.d.B, H = c.d.H, G = c.d.G;
    add_weight_grad(i, n, rows, prev_h + t0 * c.d.B * H, H, H, dloop, G, G, d_w_hidden, G);
    const int64_t k0 = part(H, i, n), k1 = part(H, i + 1, n);
    add_column_sums(dloop, rows, G, 2 * H + k0, k1 - k0, d_b_hidden + k0);
  }
};

// ------------------------------------------------------------------------------------------
// The drivers.

// The input projection z [rows, G] = x [rows, I] @ W_in + b_in, W_in one matrix or two side
// by side (a GRU's gates' and candidate's input rows, read where the cell keeps them: nothing
// is sliced or concatenated before the call; see rnnkit/_native's `forward`).
struct Projection {
  Weights first, second;  // second: columns from `split` on, or empty
  int64_t split = 0;
  void mul(int64_t rows, const float* x, int64_t ldx, float* z, int64_t ldz) const {
    first.mul(rows, x, ldx, false, z, ldz);
    second.mul(rows, x, ldx, false, z + split, ldz);
  }
};

// Forward: outputs [T, B, H] (zeros past each length); the kind keeps the final state.
template <class Kind>
void forward(Kind& kind, const float* x, const Projection& proj, float* outs) {
  const Dims& d = kind.c.d;
  auto project = [&](int64_t rows, const float* x_rows, float* z_rows) {  // z = x @ W_in + b_in
    proj.mul(rows, x_rows, d.I, z_rows, d.G);
  };
  // Training: where the kind saves each step's activations (kind.slot(t), computed in place
  // from the projection), the projection goes straight there instead of through scratch and a
  // copy of the whole [T, B, G]. The seed's training step at batch 1024 ran in 412-439 ms
  // against 456-551 ms with the copy (medians, four alternating pairs); at 128, within noise.
  const bool in_slots = kind.slot(0) != nullptr;
  const int64_t n = row_threads(d.B);
  if (n == kThreads) {  // every thread busy with its rows: each projects its rows step by step
    Scratch z(in_slots ? 0 : d.B * d.G);
    parallel(n, [&](int64_t i) {
      const int64_t b0 = part(d.B, i, n), b1 = part(d.B, i + 1, n);
      for (int64_t t = 0; t < d.T; ++t) {
        float* zt = in_slots ? kind.slot(t) : z.data();
        project(b1 - b0, x + (t * d.B + b0) * d.I, zt + b0 * d.G);
        kind.fwd_step(t, zt, outs + t * d.B * d.H, b0, b1);
      }
    });
    return;
  }
  // Too few rows for every thread: with units to spare (LSTM and GRU layers with a whole
  // 32-unit panel per thread), the threads split each step's columns instead. Timed in pairs
  // on two cores against the rows-only split (benchmarks/native_ab.py, 300 pairs): inference
  // 1.15x faster at batch 16, 1.18x at 32, training 1.04x at 16; at batch 1 no change (0.99x:
  // the two meetings a step cost what the halved products save).
  const int64_t block = block_steps(d);
  Scratch z(in_slots ? 0 : block * d.B * d.G);
  auto block_z = [&](int64_t t0) { return in_slots ? kind.slot(t0) : z.data(); };  // [steps, B, G]
  auto project_block = [&](int64_t t0, int64_t steps, int64_t i) {  // the i-th thread's rows of it
    const int64_t rows = steps * d.B, r0 = part(rows, i, kThreads), r1 = part(rows, i + 1, kThreads);
    project(r1 - r0, x + (t0 * d.B + r0) * d.I, block_z(t0) + r0 * d.G);
  };
  if constexpr (Kind::kColumns) {
    if (columns(d)) {
      SpinBarrier all(kThreads);
      parallel(kThreads, [&](int64_t i) {  // one set of threads for every block: their meetings are cheaper
        const int64_t u0 = unit_part(d, i), u1 = unit_part(d, i + 1);
        for (int64_t t0 = 0; t0 < d.T; t0 += block) {
          const int64_t steps = std::min(block, d.T - t0);
          project_block(t0, steps, i);
          all.wait();
          for (int64_t t = t0; t < t0 + steps; ++t)  // the steps, all rows, this thread's units
            kind.fwd_cols(t, block_z(t0) + (t - t0) * d.B * d.G, outs + t * d.B * d.H, u0, u1, all);
        }
      });
      return;
    }
  }
  for (int64_t t0 = 0; t0 < d.T; t0 += block) {
    const int64_t steps = std::min(block, d.T - t0);
    float* zb = block_z(t0);
    parallel(kThreads, [&](int64_t i) { project_block(t0, steps, i); });  // the block's input projection, by rows
    parallel(n, [&](int64_t i) {  // the steps, by batch rows
      for (int64_t t = t0; t < t0 + steps; ++t)
        kind.fwd_step(t, zb + (t - t0) * d.B * d.G, outs + t * d.B * d.H, part(d.B, i, n), part(d.B, i + 1, n));
    });
  }
}

// Backward: from the outputs' gradient, the input's [T, B, I] (unless dx is null: nothing
// asked for it) and the input projection's weight and bias gradients; the kind adds its loop
// weight gradients and keeps the initial state's gradient. `dloop`: whether the kind needs a
// second gradient buffer.
template <class Kind>
void backward(Kind& kind, bool dloop, const float* x, const float* w_in, const float* d_outs, float* dx,
              float* dw_in, float* db_in) {
  const Dims& d = kind.c.d;
  const int64_t block = block_steps(d);
  Scratch dz(block * d.B * d.G), dl(dloop ? block * d.B * d.G : 0);
  zero(dw_in, d.I * d.G);
  zero(db_in, d.G);
  const Weights proj_t = dx ? Weights(w_in, d.G, d.G, d.I, true) : Weights();
  for (int64_t t1 = d.T; t1 > 0; t1 -= block) {
    const int64_t t0 = std::max<int64_t>(0, t1 - block), steps = t1 - t0, rows = steps * d.B;
    const int64_t n = row_threads(d.B);
    kind.begin_block(t0);
    bool stepped = false;
    if constexpr (Kind::kColumns) {
      // The steps, all rows, each thread its units, as forward. In pairs against the rows-only
      // backward (native_ab.py, 200 pairs): training 1.047x at batch 16, 1.074x at 32, 0.990x at 4.
      if (n < kThreads && columns(d)) {
        SpinBarrier all(kThreads);
        parallel(kThreads, [&](int64_t i) {
          const int64_t u0 = unit_part(d, i), u1 = unit_part(d, i + 1);
          for (int64_t t = t1 - 1; t >= t0; --t) {
            const int64_t o = (t - t0) * d.B * d.G;
            kind.bwd_cols(t, d_outs + t * d.B * d.H, dz.data() + o, nullptr, u0, u1, all);
          }
        });
        stepped = true;
      }
    }
    if (!stepped)
      parallel(n, [&](int64_t i) {  // the steps, by batch rows
        const int64_t b0 = part(d.B, i, n), b1 = part(d.B, i + 1, n);
        for (int64_t t = t1 - 1; t >= t0; --t) {
          const int64_t o = (t - t0) * d.B * d.G;
          kind.bwd_step(t, d_outs + t * d.B * d.H, dz.data() + o, dloop ? dl.data() + o : nullptr, b0, b1);
        }
      });
    parallel(kThreads, [&](int64_t i) {  // weight gradients by columns, the input's by rows
      add_weight_grad(i, kThreads, rows, x + t0 * d.B * d.I, d.I, d.I, dz.data(), d.G, d.G, dw_in, d.G, db_in);
      const int64_t r0 = part(rows, i, kThreads), r1 = part(rows, i + 1, kThreads);
      if (dx) proj_t.mul(r1 - r0, dz.data() + r0 * d.G, d.G, false, dx + (t0 * d.B + r0) * d.I, d.I);
      kind.block_grads(t0, steps, dz.data(), dl.data(), i, kThreads);
    });
  }
}

Dims dims(const Arg& x, const Arg& w_in) {
  const auto xd = x.dimensions();
  return Dims{xd[0], xd[1], xd[2], 0, w_in.dimensions()[1]};
}

// A result's data, or null when it has no elements (the caller did not ask for it).
float* wanted(Ret r) { return r->element_count() > 0 ? r->typed_data() : nullptr; }

std::vector<float> from(const Arg& a) { return std::vector<float>(a.typed_data(), a.typed_data() + a.element_count()); }

Common common(Dims d, int64_t H, const Lengths& lengths, bool save) {
  d.H = H;
  return Common{d, lengths.typed_data(), save};
}

// ------------------------------------------------------------------------------------------
// FFI entry points. Forward: (x, the cell's weights..., initial state..., lengths) ->
// (outputs, final state..., saved...); saved results have size 0 for inference. The weights
// are the cell's own arrays, kernel [I + H, G] (W_in its first I rows, the loop's the rest)
// and bias, a GRU's two kernels and two biases; a reset-after GRU's come prepared, (W_in,
// b_in, W_hidden, b_hidden). Backward: (x, W_in, loop weights..., saved..., d_outputs,
// d_final state..., lengths) -> (d_x, d_W_in, d_b_in, d_loop weights..., d_initial state...).

ffi::Error RnnFwd(Arg x, Arg kernel, Arg bias, Arg h0, Lengths len, Ret outs, Ret h_t, Ret saved_h, Ret prev_h) {
  Dims d = dims(x, kernel);
  const float* w = kernel.typed_data();
  RnnKind k{common(d, d.G, len, saved_h->element_count() > 0),
            Weights(w + d.I * d.G, d.G, d.G, d.G, false),
            saved_h->typed_data(),
            prev_h->typed_data(),
            nullptr,
            from(h0),
            {},
            {}};
  forward(k, x.typed_data(), Projection{Weights(w, d.G, d.I, d.G, false, bias.typed_data())}, outs->typed_data());
  copy(h_t->typed_data(), k.h.data(), k.h.size());
  return ffi::Error::Success();
}

ffi::Error RnnBwd(Arg x, Arg w_in, Arg wh, Arg saved_h, Arg prev_h, Arg d_outs, Arg d_h_t, Lengths len, Ret dx,
                  Ret dw_in, Ret db_in, Ret d_wh, Ret d_h0) {
  Dims d = dims(x, w_in);
  RnnKind k{common(d, d.G, len, true),
            Weights(wh.typed_data(), d.G, d.G, d.G, true),
            saved_h.typed_data(),
            prev_h.typed_data(),
            d_wh->typed_data(),
            {},
            from(d_h_t),
            std::vector<float>(d.B * d.G)};
  zero(k.d_wh, d.G * d.G);
  backward(k, false, x.typed_data(), w_in.typed_data(), d_outs.typed_data(), wanted(dx), dw_in->typed_data(),
           db_in->typed_data());
  copy(d_h0->typed_data(), k.dh.data(), k.dh.size());
  return ffi::Error::Success();
}

ffi::Error LstmFwd(Arg x, Arg kernel, Arg bias, Arg c0, Arg h0, Lengths len, float forget_bias, Ret outs, Ret c_t,
                   Ret h_t, Ret acts, Ret tanh_c, Ret prev_c, Ret prev_h) {
  Dims d = dims(x, kernel);
  const float* w = kernel.typed_data();
  LstmKind k{common(d, d.G / 4, len, acts->element_count() > 0),
             Weights(w + d.I * d.G, d.G, d.G / 4, d.G, false),
             forget_bias,
             acts->typed_data(),
             tanh_c->typed_data(),
             prev_c->typed_data(),
             prev_h->typed_data(),
             nullptr,
             from(c0),
             from(h0),
             {},
             {},
             {}};
  forward(k, x.typed_data(), Projection{Weights(w, d.G, d.I, d.G, false, bias.typed_data())}, outs->typed_data());
  copy(c_t->typed_data(), k.cs.data(), k.cs.size());
  copy(h_t->typed_data(), k.h.data(), k.h.size());
  return ffi::Error::Success();
}

ffi::Error LstmBwd(Arg x, Arg w_in, Arg wh, Arg acts, Arg tanh_c, Arg prev_c, Arg prev_h, Arg d_outs, Arg d_c_t,
                   Arg d_h_t, Lengths len, Ret dx, Ret dw_in, Ret db_in, Ret d_wh, Ret d_c0, Ret d_h0) {
  Dims d = dims(x, w_in);
  const int64_t H = d.G / 4;
  LstmKind k{common(d, H, len, true),
             Weights(wh.typed_data(), d.G, d.G, H, true),
             0.0f,
             acts.typed_data(),
             tanh_c.typed_data(),
             prev_c.typed_data(),
             prev_h.typed_data(),
             d_wh->typed_data(),
             {},
             {},
             from(d_c_t),
             from(d_h_t),
             std::vector<float>(d.B * H)};
  zero(k.d_wh, H * d.G);
  backward(k, false, x.typed_data(), w_in.typed_data(), d_outs.typed_data(), wanted(dx), dw_in->typed_data(),
           db_in->typed_data());
  copy(d_c0->typed_data(), k.dc.data(), k.dc.size());
  copy(d_h0->typed_data(), k.dh.data(), k.dh.size());
  return ffi::Error::Success();
}

ffi::Error GruFwd(Arg x, Arg gates_kernel, Arg candidate_kernel, Arg gates_bias, Arg candidate_bias, Arg h0,
                  Lengths len, Ret outs, Ret h_t, Ret saved, Ret prev_h) {
  Dims d = dims(x, candidate_kernel);
  const int64_t H = d.G;
  d.G = 3 * H;
  const float* wg = gates_kernel.typed_data();
  const float* wc = candidate_kernel.typed_data();
  GruKind k{common(d, H, len, saved->element_count() > 0),
            Weights(wg + d.I * 2 * H, 2 * H, H, 2 * H, false),
            Weights(wc + d.I * H, H, H, H, false),
            saved->typed_data(),
            prev_h->typed_data(),
            nullptr,
            nullptr,
            from(h0),
            std::vector<float>(d.B * H),
            {},
            {},
            {},
            {}};
  const Projection proj{Weights(wg, 2 * H, d.I, 2 * H, false, gates_bias.typed_data()),
                        Weights(wc, H, d.I, H, false, candidate_bias.typed_data()), 2 * H};
  forward(k, x.typed_data(), proj, outs->typed_data());
  copy(h_t->typed_data(), k.h.data(), k.h.size());
  return ffi::Error::Success();
}

ffi::Error GruBwd(Arg x, Arg w_in, Arg wg, Arg wc, Arg saved, Arg prev_h, Arg d_outs, Arg d_h_t, Lengths len,
                  Ret dx, Ret dw_in, Ret db_in, Ret d_wg, Ret d_wc, Ret d_h0) {
  Dims d = dims(x, w_in);
  const int64_t H = d.G / 3;
  GruKind k{common(d, H, len, true),
            Weights(wg.typed_data(), 2 * H, 2 * H, H, true),
            Weights(wc.typed_data(), H, H, H, true),
            saved.typed_data(),
            prev_h.typed_data(),
            d_wg->typed_data(),
            d_wc->typed_data(),
            {},
            {},
            from(d_h_t),
            std::vector<float>(d.B * H),
            std::vector<float>(d.B * H),
            std::vector<float>(d.B * H)};
  k.rh_block.resize(block_steps(d) * d.B * H);
  zero(k.d_wg, H * 2 * H);
  zero(k.d_wc, H * H);
  backward(k, false, x.typed_data(), w_in.typed_data(), d_outs.typed_data(), wanted(dx), dw_in->typed_data(),
           db_in->typed_data());
  copy(d_h0->typed_data(), k.dh.data(), k.dh.size());
  return ffi::Error::Success();
}

ffi::Error GruAfterFwd(Arg x, Arg w_in, Arg b_in, Arg w_hidden, Arg b_hidden, Arg h0, Lengths len, Ret outs,
                       Ret h_t, Ret saved, Ret prev_h) {
  Dims d = dims(x, w_in);
  const int64_t H = d.G / 3;
  GruAfterKind k{common(d, H, len, saved->element_count() > 0),
                 Weights(w_hidden.typed_data(), d.G, H, d.G, false),
                 b_hidden.typed_data(),
                 saved->typed_data(),
                 prev_h->typed_data(),
                 nullptr,
                 nullptr,
                 from(h0),
                 std::vector<float>(d.B * d.G),
                 {},
                 {}};
  forward(k, x.typed_data(), Projection{Weights(w_in.typed_data(), d.G, d.I, d.G, false, b_in.typed_data())},
          outs->typed_data());
  copy(h_t->typed_data(), k.h.data(), k.h.size());
  return ffi::Error::Success();
}

ffi::Error GruAfterBwd(Arg x, Arg w_in, Arg w_hidden, Arg saved, Arg prev_h, Arg d_outs, Arg d_h_t, Lengths len,
                       Ret dx, Ret dw_in, Ret db_in, Ret d_w_hidden, Ret d_b_hidden, Ret d_h0) {
  Dims d = dims(x, w_in);
  const int64_t H = d.G / 3;
  GruAfterKind k{common(d, H, len, true),
                 Weights(w_hidden.typed_data(), d.G, d.G, H, true),
                 nullptr,
                 saved.typed_data(),
                 prev_h.typed_data(),
                 d_w_hidden->typed_data(),
                 d_b_hidden->typed_data(),
                 {},
                 {},
                 from(d_h_t),
                 std::vector<float>(d.B * H)};
  zero(k.d_w_hidden, H * d.G);
  zero(k.d_b_hidden, H);
  backward(k, true, x.typed_data(), w_in.typed_data(), d_outs.typed_data(), wanted(dx), dw_in->typed_data(),
           db_in->typed_data());
  copy(d_h0->typed_data(), k.dh.data(), k.dh.size());
  return ffi::Error::Success();
}

}  // namespace

// How many threads the kernel runs (at least one); called by rnnkit/_native once it is loaded.
extern "C" void rnnkit_set_threads(int64_t n) { kThreads = std::max<int64_t>(1, n); }
extern "C" int64_t rnnkit_threads() { return kThreads; }
// Whether this build runs its products on the AVX-512 microkernels (1) or not (0).
extern "C" int64_t rnnkit_avx512() {
#if defined(__AVX512F__)
  return 1;
#else
  return 0;
#endif
}
// Whether this build multiplies one to three rows by a weight matrix on its AVX2 kernel
// (1: AVX2 with FMA but not AVX-512) rather than on OpenBLAS (0).
extern "C" int64_t rnnkit_avx2_rows() {
#if defined(RNNKIT_AVX2_ROWS)
  return 1;
#else
  return 0;
#endif
}

// ------------------------------------------------------------------------------------------
// Handler symbols (rnnkit/_native registers them with jax.ffi).

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnkitRnnFwd, RnnFwd,
                              ffi::Ffi::Bind()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Lengths>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnkitRnnBwd, RnnBwd,
                              ffi::Ffi::Bind()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Lengths>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnkitLstmFwd, LstmFwd,
                              ffi::Ffi::Bind()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Lengths>()
                                  .Attr<float>("forget_bias")
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnkitLstmBwd, LstmBwd,
                              ffi::Ffi::Bind()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Lengths>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnkitGruFwd, GruFwd,
                              ffi::Ffi::Bind()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Lengths>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnkitGruBwd, GruBwd,
                              ffi::Ffi::Bind()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Lengths>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnkitGruAfterFwd, GruAfterFwd,
                              ffi::Ffi::Bind()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Lengths>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnkitGruAfterBwd, GruAfterBwd,
                              ffi::Ffi::Bind()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Arg>()
                                  .Arg<Lengths>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>()
                                  .Ret<Arg>());
