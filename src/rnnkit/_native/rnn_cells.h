// rnnkit's native CPU kernel: the cells, a kind each, their forward and backward steps (part
// of rnn_cpu.cc's one translation unit; see there). rnnkit/_fused.py has the same formulas in
// JAX.
//
// Each kind holds its weights, state and saved values and provides, for the rows [b0, b1) of
// the batch (the rows are independent, so threads take disjoint ranges):
//   fwd_step(t, z, out_t, b0, b1): z [B, G] holds the step's input projection; computes the step;
//   bwd_step(t, d_out_t, dz, dloop, b0, b1): writes the step's gradient of the projection into
//       dz [B, G] (and, where the loop matmul's output gradient differs, into dloop) and steps
//       the carried state gradient back;
//   block_grads(t0, steps, dz, dloop, i, n): adds a block's loop weight gradients, the i-th of
//       n column ranges of each;
//   slot(t): where step t's activations are saved (see RnnKind), or null;
//   begin_block(t0): called before the backward steps of the block starting at step t0.
// Kinds with kColumns also provide fwd_cols and bwd_cols, the step for every row and a range
// of units, for the column split (see rnn_drivers.h).
// Saved values (training) are written only when `save`.

#pragma once

#include <cstdint>
#include <vector>

#include "rnn_layout.h"
#include "rnn_math.h"
#include "rnn_products.h"
#include "rnn_threads.h"

namespace {

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

}  // namespace
