// rnnkit's native CPU kernel: its XLA FFI entry points, one per cell kind and direction (part
// of rnn_cpu.cc's one translation unit, which defines their handlers; see there). A handler's
// binding is derived from its entry point's parameters, in order (XLA FFI's automatic
// binding): an `Arg` is an input buffer (float32), `Lengths` the sequence lengths (int32), a
// `Ret` a result (float32) and an `ffi::Attr` a named attribute.
//
// Forward: (x, the cell's weights..., initial state..., lengths) ->
// (outputs, final state..., saved...); saved results have size 0 for inference. The weights
// are the cell's own arrays, kernel [I + H, G] (W_in its first I rows, the loop's the rest)
// and bias, a GRU's two kernels and two biases; a reset-after GRU's come prepared, (W_in,
// b_in, W_hidden, b_hidden). Backward: (x, W_in, loop weights..., saved..., d_outputs,
// d_final state..., lengths) -> (d_x, d_W_in, d_b_in, d_loop weights..., d_initial state...).

#pragma once

#include <cstdint>
#include <vector>

#include "rnn_cells.h"
#include "rnn_drivers.h"
#include "rnn_layout.h"
#include "rnn_math.h"
#include "rnn_products.h"
#include "xla/ffi/api/ffi.h"

namespace {

namespace ffi = xla::ffi;
using Arg = ffi::Buffer<ffi::F32>;
using Lengths = ffi::Buffer<ffi::S32>;
using Ret = ffi::ResultBuffer<ffi::F32>;
constexpr char kForgetBias[] = "forget_bias";  // the LSTM forward's attribute

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

ffi::Error LstmFwd(Arg x, Arg kernel, Arg bias, Arg c0, Arg h0, Lengths len, ffi::Attr<float, kForgetBias> forget_bias,
                   Ret outs, Ret c_t, Ret h_t, Ret acts, Ret tanh_c, Ret prev_c, Ret prev_h) {
  Dims d = dims(x, kernel);
  const float* w = kernel.typed_data();
  LstmKind k{common(d, d.G / 4, len, acts->element_count() > 0),
             Weights(w + d.I * d.G, d.G, d.G / 4, d.G, false),
             *forget_bias,
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
