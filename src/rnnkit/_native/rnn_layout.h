// rnnkit's native CPU kernel: shapes, masking and blocking (part of rnn_cpu.cc's one
// translation unit; see there).
//
// Layout: time-major, row-major. x [T, B, I], states [B, H], W_in [I, G], W_loop [H, *].
// Blocks are `block_steps` steps long so that their matrices have about 4096 rows.
//
// Masking is TF1's sequence_length: at step t a row b with t >= lengths[b] keeps its state
// and emits zeros, and in the backward pass that row's state gradient passes through.

#pragma once

#include <algorithm>
#include <cstdint>

namespace {

// Products by a weight matrix work on panels of 32 columns (two AVX-512 vectors; see Weights),
// and threads that split a product's or a step's columns take whole panels.
constexpr int64_t kPanel = 32;

inline bool valid(const int32_t* lengths, int64_t t, int64_t b) { return t < lengths[b]; }

struct Dims {
  int64_t T, B, I, H, G;
};

int64_t block_steps(const Dims& d) {
  const int64_t rows = 4096;
  return std::max<int64_t>(1, std::min<int64_t>(d.T, (rows + d.B - 1) / std::max<int64_t>(d.B, 1)));
}

}  // namespace
