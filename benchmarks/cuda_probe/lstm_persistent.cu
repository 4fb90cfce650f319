// A persistent LSTM forward kernel: one launch runs a TF1 LSTMCell layer over every time step,
// the time loop inside the kernel (a probe for the speed issue's GPU rows; see
// benchmarks/cuda_probe.py, which builds and times it). Compiled at run time by NVRTC, so this
// file holds device code only.
//
// The idea it tests: per-step kernels pay a launch floor of ~20 us per step inside XLA's loop
// (benchmarks/RESULTS.md, "GPU, fourth run"), far more than a step's work. Here every CTA owns U
// hidden units for the whole sequence, keeps its slice of the loop weights in shared memory,
// and the CTAs meet once a step at a grid-wide barrier (the kernel is launched cooperatively, so
// all CTAs are resident at once).
//
// TF1's LSTMCell (no peepholes, clip or projection): z = x W_x + b + h W_h, gates i, j, f, o in
// that order (columns [0, H), [H, 2H), ...), c' = c sigmoid(f + forget_bias) + sigmoid(i) tanh(j),
// h' = tanh(c') sigmoid(o). Products and activations in float32 (no TF32): the same formulas
// as rnnkit/_fused.py's LSTM kind.
//
// Layouts (CTA-major, each CTA's units contiguous and the batch innermost: lanes take
// consecutive rows, so every load and store is whole sectors; the caller permutes once per
// call, outside the loop; unit number = k * U + u):
//   zx     [T, nCTA, 4, U, B]  x W_x + b, gates i, j, f, o
//   wh     [H, nCTA, 4, U]     the loop weights' columns in the same order
//   h0, c0 [nCTA, U, B]        the initial state
//   hs     [T, nCTA, U, B]     every step's output (= h)
//   c_out  [nCTA, U, B]        the final cell state
//   barrier                    one unsigned int, zero at launch
// Shared memory (dynamic): wh's slice [H][U][4] (a unit's four gates one 16-byte load), R rows
// of h_{t-1} [R][H + 1] (padded: lanes reading one column from different rows hit different
// banks), and c [U][B].

static __device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

// Every CTA arrives once per step; arrival number `step` (1, 2, ...) waits until all have.
static __device__ __forceinline__ void grid_barrier(unsigned int* counter, unsigned int step) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();  // this CTA's h_t stores are visible before its arrival
    atomicAdd(counter, 1u);
    const unsigned int target = step * gridDim.x;
    while (true) {
      unsigned int seen;
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
      if (seen >= target) break;
    }
  }
  __syncthreads();
}

extern "C" __global__ void __launch_bounds__(256) lstm_fwd(const float* __restrict__ zx,
                                                           const float* __restrict__ wh,
                                                           const float* __restrict__ h0,
                                                           const float* __restrict__ c0, float* hs,
                                                           float* __restrict__ c_out, unsigned int* barrier,
                                                           int T, int B, int H, int U, int R, float forget_bias) {
  extern __shared__ float4 smem4[];
  const int n_cta = gridDim.x, k = blockIdx.x, hp = H + 1;
  float4* w_s = smem4;                                // [H][U] of (i, j, f, o)
  float* h_s = reinterpret_cast<float*>(w_s + H * U);  // [R][H + 1]
  float* c_s = h_s + R * hp;                          // [U][B]

  for (int e = threadIdx.x; e < H * U; e += blockDim.x) {
    const int q = e / U, u = e % U;
    const float* src = wh + ((size_t)q * n_cta + k) * 4 * U + u;
    w_s[e] = make_float4(src[0], src[U], src[2 * U], src[3 * U]);
  }
  for (int e = threadIdx.x; e < U * B; e += blockDim.x) c_s[e] = c0[(size_t)k * U * B + e];
  __syncthreads();

  for (int t = 0; t < T; ++t) {
    const float* h_prev = t == 0 ? h0 : hs + (size_t)(t - 1) * B * H;  // [nCTA][U][B]
    float* h_next = hs + (size_t)t * B * H + (size_t)k * U * B;        // this CTA's [U][B]
    const float* z_t = zx + ((size_t)t * n_cta + k) * 4 * U * B;       // this CTA's [4][U][B]
    for (int r0 = 0; r0 < B; r0 += R) {
      const int rows = min(R, B - r0);
      // Stage rows r0 .. r0+rows-1 of h_{t-1}: element (cta j, unit u, row b) of the CTA-major
      // buffer is column j*U + u; consecutive threads read consecutive rows.
      for (int e = threadIdx.x; e < n_cta * U * rows; e += blockDim.x) {
        const int col = e / rows, b = e % rows;
        h_s[b * hp + col] = __ldcg(h_prev + (size_t)col * B + r0 + b);  // L2: other CTAs wrote it
      }
      __syncthreads();
      // One thread per (unit, row): the unit's four gate sums over H, then its cell update.
      for (int p = threadIdx.x; p < U * rows; p += blockDim.x) {
        const int u = p / rows, b = p % rows;
        const float* hrow = h_s + b * hp;
        const float4* w = w_s + u;  // the same address across the warp: a broadcast
        float ai = 0.f, aj = 0.f, af = 0.f, ao = 0.f;
#pragma unroll 8
        for (int q = 0; q < H; ++q) {
          const float hv = hrow[q];
          const float4 wq = w[q * U];
          ai = fmaf(hv, wq.x, ai);
          aj = fmaf(hv, wq.y, aj);
          af = fmaf(hv, wq.z, af);
          ao = fmaf(hv, wq.w, ao);
        }
        const size_t at = (size_t)u * B + r0 + b;
        ai += z_t[at];
        aj += z_t[(size_t)U * B + at];
        af += z_t[(size_t)2 * U * B + at];
        ao += z_t[(size_t)3 * U * B + at];
        float& c = c_s[at];
        c = c * sigmoid_f(af + forget_bias) + sigmoid_f(ai) * tanhf(aj);
        h_next[at] = tanhf(c) * sigmoid_f(ao);
      }
      __syncthreads();
    }
    grid_barrier(barrier, (unsigned int)(t + 1));
  }
  for (int e = threadIdx.x; e < U * B; e += blockDim.x) c_out[(size_t)k * U * B + e] = c_s[e];
}
