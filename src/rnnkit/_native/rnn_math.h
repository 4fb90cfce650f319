// rnnkit's native CPU kernel: elementwise functions and small matrix and memory helpers (part
// of rnn_cpu.cc's one translation unit; see there).
//
// tanh is XLA:CPU's rational approximation and exp Cephes' polynomial with exponent bits,
// written so the compiler vectorises the row loops.

#pragma once

#include <cblas.h>  // scipy-openblas32's: its functions carry the scipy_ prefix

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

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

// Frees what std::malloc or std::aligned_alloc gave (packed weights, packing buffers).
struct FreeFloats {
  void operator()(float* p) const { std::free(p); }
};

}  // namespace
