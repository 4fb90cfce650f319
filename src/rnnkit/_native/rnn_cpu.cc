// rnnkit's native CPU kernel: one RNN layer over a whole sequence, forward and backward, as
// XLA FFI custom calls (rnnkit/_native/__init__.py builds, loads and calls them;
// rnnkit/_fused.py has the same formulas in JAX).
//
// Products by a weight matrix run on the microkernel of `Weights` (AVX-512), the weights
// packed once per call; the weight gradients on the same microkernel, both operands packed a
// chunk of rows at a time. On CPUs without AVX-512 every product is OpenBLAS's sgemm, but
// those of one to three rows, which with AVX2 run on a kernel of their own (rows_product).
// The work is split over the kernel's own threads (see kThreads).
//
// This file is the kernel's one translation unit: it includes the headers beside it, each on
// one concern, and defines what the library exports. Everything else has internal linkage
// (the headers' anonymous namespace): the compiler sees the whole kernel at once and inlines
// across the headers as within one file.
//   rnn_layout.h    shapes, masking (sequence lengths), blocks of steps, 32-column panels
//   rnn_math.h      tanh, exp and sigmoid, vector and matrix helpers (OpenBLAS's sgemm)
//   rnn_threads.h   the kernel's threads (kThreads, parallel), splits by rows or units
//   rnn_avx512.h    AVX-512 microkernels: products by packed panels, packed weight gradients
//   rnn_avx2.h      AVX2 kernel for products of one to three rows (builds without AVX-512)
//   rnn_products.h  Weights (packed once per call) and weight gradients, on the above or OpenBLAS
//   rnn_cells.h     the cell kinds' steps: BasicRNN, LSTM, GRU, GRU with the reset after
//   rnn_drivers.h   forward and backward over the sequence, for any kind
//   rnn_ffi.h       the FFI entry points, a kind and direction each (handlers defined here)

#include <algorithm>
#include <cstdint>

#include "rnn_ffi.h"
#include "rnn_threads.h"
#include "xla/ffi/api/ffi.h"

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
// Handler symbols (rnnkit/_native registers them with jax.ffi): Rnnkit<Name>Fwd and
// Rnnkit<Name>Bwd for each kind, handling rnn_ffi.h's entry points <Name>Fwd and <Name>Bwd,
// each bound as its parameters say.
#define RNNKIT_HANDLERS(Name)                                \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(Rnnkit##Name##Fwd, Name##Fwd); \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(Rnnkit##Name##Bwd, Name##Bwd)

RNNKIT_HANDLERS(Rnn);
RNNKIT_HANDLERS(Lstm);
RNNKIT_HANDLERS(Gru);
RNNKIT_HANDLERS(GruAfter);
