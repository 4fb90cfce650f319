// rnnkit's native CPU kernel: products by a weight matrix (`Weights`) and weight gradients
// (`add_weight_grad`), on the microkernels of rnn_avx512.h or rnn_avx2.h where the build has
// them, else on OpenBLAS (part of rnn_cpu.cc's one translation unit; see there).

#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "rnn_avx2.h"
#include "rnn_avx512.h"
#include "rnn_layout.h"
#include "rnn_math.h"
#include "rnn_threads.h"

namespace {

// Weights multiplied by many times in one call (the loop weights, each step; the input
// projection's, each block), packed once per call. With AVX-512 the products run on the
// microkernel of rnn_avx512.h. OpenBLAS packs B again on every call: at the per-step shapes
// (64 rows, K and N 128 to 512, one core) it ran at 0.7x-0.9x of this kernel's speed in a
// standalone benchmark that alternated the two; at 2048-row input projections, even or slower.
// Without AVX-512 the products are OpenBLAS's, with B stored untransposed (OpenBLAS ran 72
// against about 100 GFLOP/s reading it transposed), but those of one to three rows, which with
// AVX2 run on rnn_avx2.h's rows_product.
//
// Panels of 32 columns (two vectors), each K x 32 contiguous and zero-padded past N; the
// microkernel keeps a block of up to 8 rows x 32 columns of C in 16 registers, over at most
// 256 of K (a panel's 32 KiB stays in L1) and 64 rows of A at a time (in L2). Threads that
// split a product's columns take whole panels (that split is the same without AVX-512).
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

}  // namespace
