// How each persistent kernel (persistent.cu) is launched: rows staged at a time and dynamic shared
// memory, from the layer's sizes. Shared by ffi.cc (the XLA handlers) and host_check.cc.

#pragma once

#include <algorithm>
#include <cstdint>

namespace rnnkit_probe {

// Floats rounded up to whole 16-byte units (persistent.cu's quads()).
inline int quads(int floats) { return (floats + 3) & ~3; }

struct Plan {
  int R;       // batch rows staged in shared memory at a time
  int shared;  // bytes of dynamic shared memory per CTA
};

// Each kernel's shared memory is `fixed` floats (weights, carried state) and R staged rows of
// `cols` floats (a row pitch of a multiple of 4). R: at most `rows` and B, as many as fit in
// 200 KiB per CTA (under the 227 KiB Hopper allows), whole warps of rows where there are 32 or
// more.
inline Plan plan(int64_t rows, int B, int fixed, int cols) {
  constexpr int kBudget = 200 * 1024 / 4;
  int r = static_cast<int>(std::min<int64_t>({rows, B, (kBudget - fixed) / cols}));
  if (r >= 32) r -= r % 32;
  while (r > 1 && fixed + cols * quads(r) > kBudget) --r;
  r = std::max(r, 1);
  return {r, static_cast<int>(sizeof(float)) * (fixed + cols * quads(r))};
}

// lstm_fwd: W_h's slice [H][U][4], staged h_{t-1} [H][pitch], c [U][B].
inline Plan lstm_fwd_plan(int64_t rows, int B, int H, int U) { return plan(rows, B, 4 * H * U + U * B, H); }

// lstm_bwd: W_h's rows [U][4H], staged dz_t [4H][pitch], dh and dc [U][B].
inline Plan lstm_bwd_plan(int64_t rows, int B, int H, int U) {
  return plan(rows, B, quads(U * 4 * H) + 2 * U * B, 4 * H);
}

// gru_fwd: W_g's slice [H][U][2], W_c's [H][U], staged h_{t-1} or r h [H][pitch], u [U][B].
inline Plan gru_fwd_plan(int64_t rows, int B, int H, int U) {
  return plan(rows, B, quads(2 * H * U) + quads(H * U) + U * B, H);
}

// gru_bwd: W_g's rows [U][2H], W_c's [U][H], staged dz_t [2H][pitch], three [U][B].
inline Plan gru_bwd_plan(int64_t rows, int B, int H, int U) {
  return plan(rows, B, quads(2 * U * H) + quads(U * H) + 3 * U * B, 2 * H);
}

}  // namespace rnnkit_probe
