// rnnkit's native CPU kernel: the AVX-512 microkernels (part of rnn_cpu.cc's one translation
// unit; see there). Empty in builds without AVX-512.
//
// `micro` multiplies up to 8 rows of A by one packed 32-column panel of B (see Weights), the
// block of C kept in 16 registers; `weight_grad_packed` runs a weight gradient A^T @ D on it,
// both operands packed a chunk of rows at a time.

#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "rnn_layout.h"
#include "rnn_math.h"

namespace {

// A product's blocking: at most kDepth of K at a time (a panel's 32 KiB stays in L1) and
// kRowGroup rows of A (in L2).
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

}  // namespace
#endif  // __AVX512F__
