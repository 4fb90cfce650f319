// rnnkit's native CPU kernel: the drivers, one layer over the whole sequence, forward and
// backward, for any cell kind of rnn_cells.h (part of rnn_cpu.cc's one translation unit; see
// there).
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

#pragma once

#include <algorithm>
#include <cstdint>

#include "rnn_layout.h"
#include "rnn_math.h"
#include "rnn_products.h"
#include "rnn_threads.h"

namespace {

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

}  // namespace
