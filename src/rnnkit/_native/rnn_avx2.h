// rnnkit's native CPU kernel: the AVX2 kernel for products of one to three rows (part of
// rnn_cpu.cc's one translation unit; see there). Only in builds with AVX2 and FMA but without
// AVX-512 (those have rnn_avx512.h's microkernels); it defines RNNKIT_AVX2_ROWS.

#pragma once

#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#define RNNKIT_AVX2_ROWS 1

namespace {

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

}  // namespace
#endif  // AVX2 and FMA without AVX-512
