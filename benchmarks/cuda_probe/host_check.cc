// persistent.cu's four kernels on CPU threads (host.h) without Python or XLA, for building with
// a sanitizer: -fsanitize=thread reports a data race between two CUDA threads (a __syncthreads
// or grid barrier missing), -fsanitize=address a read or write outside a buffer or outside the
// shared memory that plan.h sizes. benchmarks/cuda_probe.py's `host` check builds and runs it
// both ways; the values themselves are checked there, through the XLA handlers.
//
//   c++ -std=c++17 -O1 -g -pthread -fsanitize=thread -Wno-unknown-pragmas host_check.cc && ./a.out
//
// Launches with sizes given as arguments (steps, batch, units, units per CTA, rows staged, CUDA
// threads per CTA), else a fixed list of small ones, forward (saving what the backward pass
// reads) then backward, for the LSTM and the GRU; exit status 0 when every output is finite.

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "host.h"
#include "persistent.cu"
#include "plan.h"

namespace {

struct Case {
  int T, B, H, U, rows, threads;
};

std::vector<float> random(size_t n, float scale, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

bool finite(const char* what, const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) {
      std::fprintf(stderr, "%s: not finite\n", what);
      return false;
    }
  return true;
}

bool run(const Case& c) {
  std::mt19937 rng(c.T * 1000 + c.B);
  const int n_cta = c.H / c.U;
  const size_t state = static_cast<size_t>(c.H) * c.B, steps = static_cast<size_t>(c.T) * state;
  bool ok = true;
  unsigned int barrier = 0;

  // LSTM: zx [T, nCTA, 4, U, B], wh [H, nCTA, 4, U], h0 and c0 [nCTA, U, B].
  {
    auto zx = random(4 * steps, 0.5f, rng), wh = random(4 * static_cast<size_t>(c.H) * c.H, 0.3f, rng);
    auto h0 = random(state, 0.1f, rng), c0 = random(state, 0.1f, rng);
    std::vector<float> hs(steps), c_out(state), gates(4 * steps), cs(steps);
    rnnkit_probe::Plan p = rnnkit_probe::lstm_fwd_plan(c.rows, c.B, c.H, c.U);
    barrier = 0;
    rnnkit_host::launch(&lstm_fwd, n_cta, c.threads, p.shared, zx.data(), wh.data(), h0.data(), c0.data(), hs.data(),
                        c_out.data(), gates.data(), cs.data(), &barrier, c.T, c.B, c.H, c.U, p.R, 1.0f);
    auto dh_out = random(steps, 1.f, rng), dc_T = random(state, 1.f, rng);
    std::vector<float> dz(4 * steps), dh0(state), dc0(state);
    p = rnnkit_probe::lstm_bwd_plan(c.rows, c.B, c.H, c.U);
    barrier = 0;
    rnnkit_host::launch(&lstm_bwd, n_cta, c.threads, p.shared, dh_out.data(), dc_T.data(), gates.data(), cs.data(),
                        c0.data(), wh.data(), dz.data(), dh0.data(), dc0.data(), &barrier, c.T, c.B, c.H, c.U, p.R);
    ok = finite("lstm hs", hs) && finite("lstm dz", dz) && finite("lstm dh0", dh0) && finite("lstm dc0", dc0) && ok;
  }
  // GRU: zx [T, nCTA, 3, U, B], wg [H, nCTA, 2, U], wc [H, nCTA, U], h0 [nCTA, U, B].
  {
    auto zx = random(3 * steps, 0.5f, rng), wg = random(2 * static_cast<size_t>(c.H) * c.H, 0.3f, rng);
    auto wc = random(static_cast<size_t>(c.H) * c.H, 0.3f, rng), h0 = random(state, 0.1f, rng);
    std::vector<float> hs(steps), rh(steps), saved(3 * steps);
    rnnkit_probe::Plan p = rnnkit_probe::gru_fwd_plan(c.rows, c.B, c.H, c.U);
    barrier = 0;
    rnnkit_host::launch(&gru_fwd, n_cta, c.threads, p.shared, zx.data(), wg.data(), wc.data(), h0.data(), hs.data(),
                        rh.data(), saved.data(), &barrier, c.T, c.B, c.H, c.U, p.R);
    auto dh_out = random(steps, 1.f, rng);
    std::vector<float> dz(3 * steps), dh0(state);
    p = rnnkit_probe::gru_bwd_plan(c.rows, c.B, c.H, c.U);
    barrier = 0;
    rnnkit_host::launch(&gru_bwd, n_cta, c.threads, p.shared, dh_out.data(), saved.data(), hs.data(), h0.data(),
                        wg.data(), wc.data(), dz.data(), dh0.data(), &barrier, c.T, c.B, c.H, c.U, p.R);
    ok = finite("gru hs", hs) && finite("gru dz", dz) && finite("gru dh0", dh0) && ok;
  }
  std::printf("T=%d B=%d H=%d U=%d R=%d threads=%d: %s\n", c.T, c.B, c.H, c.U, c.rows, c.threads,
              ok ? "ok" : "FAILED");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Case> cases;
  if (argc == 7) {
    cases.push_back({std::atoi(argv[1]), std::atoi(argv[2]), std::atoi(argv[3]), std::atoi(argv[4]),
                     std::atoi(argv[5]), std::atoi(argv[6])});
  } else {
    // As cuda_probe.py's SMALL_CASES (scalar and 16-byte staging, short row chunks), at the GPU's
    // 256 threads per CTA and at 96 (more (unit, row) pairs than threads: the strided loops).
    cases = {{5, 6, 8, 2, 4, 256}, {3, 5, 12, 3, 5, 256}, {4, 7, 8, 1, 16, 96},
             {3, 12, 12, 3, 8, 96}, {2, 40, 8, 4, 64, 256}, {2, 36, 8, 2, 64, 96}};
  }
  bool ok = true;
  for (const Case& c : cases) ok = run(c) && ok;
  return ok ? 0 : 1;
}
