// Persistent RNN kernels: one launch runs a TF1 LSTMCell or GRUCell layer's forward pass over
// every time step, another its backward pass, the time loop inside the kernel (a probe for the
// speed issue's GPU rows; benchmarks/cuda_probe.py builds, checks and times them). Compiled at
// run time by NVRTC, so this file holds device code only.
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
//   gates  [T, nCTA, 4, U, B]  training only (else null): sigmoid(i), tanh(j), sigmoid(f + bias),
//                              sigmoid(o), for the backward pass
//   cs     [T, nCTA, U, B]     training only: every step's cell state
//   barrier                    one unsigned int, zero at launch
// Shared memory (dynamic): wh's slice [H][U][4] (a unit's four gates one 16-byte load), R rows
// of h_{t-1} by column [H][pitch] (pitch: R rounded up to a multiple of 4; see stage_rows), and
// c [U][B].

static __device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

// What a host build (cuda_probe/host.h: these kernels on CPU threads, to check them without a
// GPU) defines for itself: the dynamic shared memory, the barrier's acquire load and its pause.
#ifndef RNNKIT_DYNAMIC_SHARED
#define RNNKIT_DYNAMIC_SHARED(name) extern __shared__ float4 name[]
#define RNNKIT_POLL_PAUSE()
static __device__ __forceinline__ unsigned int rnnkit_load_acquire(const unsigned int* p) {
  unsigned int seen;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(p) : "memory");
  return seen;
}
#endif

// Every CTA arrives once per step; arrival number `step` (1, 2, ...) waits until all have. A
// wait of 2^24 polls (a second or more; a real one is microseconds) means the barrier is broken:
// the kernel traps, so the probe reports an error instead of hanging until its time limit.
static __device__ __forceinline__ void grid_barrier(unsigned int* counter, unsigned int step) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();  // this CTA's h_t stores are visible before its arrival
    atomicAdd(counter, 1u);
    const unsigned int target = step * gridDim.x;
    for (unsigned int polls = 0; rnnkit_load_acquire(counter) < target; ++polls) {
      if (polls == (1u << 24)) __trap();
      RNNKIT_POLL_PAUSE();
    }
  }
  __syncthreads();
}

// Floats rounded up to whole 16-byte units, so the shared-memory regions after them stay aligned.
static __device__ __forceinline__ int quads(int floats) { return (floats + 3) & ~3; }

// Rows r0 .. r0+rows-1 of a [cols][B] buffer (other CTAs' writes: read through L2) staged in
// shared memory column by column, [cols][pitch] (pitch >= rows, a multiple of 4): the threads
// computing a product then read one column's consecutive rows, in different banks. `at(col)` is
// where column col starts in the buffer. Where B, r0 and rows allow (multiples of 4), 16-byte
// loads, eight in flight per thread before their stores: the copy is latency-bound otherwise
// (a step's h is 64 KiB per CTA for the seed's LSTM). Ends with the CTA's barrier.
template <class At>
static __device__ __forceinline__ void stage_rows(float* dst, int pitch, const float* src, int cols, int B, int r0,
                                                  int rows, At at) {
  if (((B | r0 | rows) & 3) == 0) {
    const int per_col = rows / 4, total = cols * per_col;
    for (int e0 = threadIdx.x; e0 < total; e0 += 8 * blockDim.x) {
      float4 v[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int e = e0 + i * blockDim.x;
        if (e < total) v[i] = __ldcg(reinterpret_cast<const float4*>(src + at(e / per_col) + r0) + e % per_col);
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int e = e0 + i * blockDim.x;
        if (e < total) reinterpret_cast<float4*>(dst + (e / per_col) * pitch)[e % per_col] = v[i];
      }
    }
  } else {
    for (int e = threadIdx.x; e < cols * rows; e += blockDim.x) {
      const int col = e / rows, b = e % rows;
      dst[col * pitch + b] = __ldcg(src + at(col) + r0 + b);
    }
  }
  __syncthreads();
}

extern "C" __global__ void __launch_bounds__(256) lstm_fwd(const float* __restrict__ zx,
                                                           const float* __restrict__ wh,
                                                           const float* __restrict__ h0,
                                                           const float* __restrict__ c0, float* hs,
                                                           float* __restrict__ c_out, float* __restrict__ gates,
                                                           float* __restrict__ cs, unsigned int* barrier,
                                                           int T, int B, int H, int U, int R, float forget_bias) {
  RNNKIT_DYNAMIC_SHARED(smem4);
  const int n_cta = gridDim.x, k = blockIdx.x, pitch = quads(R);
  float4* w_s = smem4;                                // [H][U] of (i, j, f, o)
  float* h_s = reinterpret_cast<float*>(w_s + H * U);  // [H][pitch]: staged rows of h_{t-1}, by column
  float* c_s = h_s + H * pitch;                       // [U][B]

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
      // Rows r0 .. r0+rows-1 of h_{t-1}: the CTA-major buffer's (cta j, unit u) is column j*U + u.
      stage_rows(h_s, pitch, h_prev, H, B, r0, rows, [=](int col) { return (size_t)col * B; });
      // One thread per (unit, row): the unit's four gate sums over H, then its cell update.
      for (int p = threadIdx.x; p < U * rows; p += blockDim.x) {
        const int u = p / rows, b = p % rows;
        const float* hcol = h_s + b;  // column q at hcol[q * pitch]: lanes on consecutive rows
        const float4* w = w_s + u;    // the same address across the warp: a broadcast
        float ai = 0.f, aj = 0.f, af = 0.f, ao = 0.f;
#pragma unroll 8
        for (int q = 0; q < H; ++q) {
          const float hv = hcol[q * pitch];
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
        const float si = sigmoid_f(ai), tj = tanhf(aj), sf = sigmoid_f(af + forget_bias), so = sigmoid_f(ao);
        float& c = c_s[at];
        c = c * sf + si * tj;
        h_next[at] = tanhf(c) * so;
        if (gates) {  // training: what the backward pass reads, in zx's layout
          float* g_t = gates + ((size_t)t * n_cta + k) * 4 * U * B;
          g_t[at] = si;
          g_t[(size_t)U * B + at] = tj;
          g_t[(size_t)2 * U * B + at] = sf;
          g_t[(size_t)3 * U * B + at] = so;
          cs[(size_t)t * B * H + (size_t)k * U * B + at] = c;
        }
      }
      __syncthreads();
    }
    grid_barrier(barrier, (unsigned int)(t + 1));
  }
  for (int e = threadIdx.x; e < U * B; e += blockDim.x) c_out[(size_t)k * U * B + e] = c_s[e];
}

// The backward pass, steps in reverse, one barrier a step. Per step each CTA turns its units'
// state gradients into the gates' pre-activation gradients dz_t (elementwise, from the saved
// activations), writes them, and after the barrier computes its units' part of
// dh_{t-1} = dz_t W_h^T from every CTA's dz_t; the cell state's gradient stays in the CTA.
//   dh_out [T, nCTA, U, B]     the outputs' gradient (the final h's added to step T-1's)
//   dc_T   [nCTA, U, B]        the final cell state's gradient
//   gates, cs                  as the forward pass saved them; c0 [nCTA, U, B]
//   wh     [H, nCTA, 4, U]     as the forward pass took them
//   dz     [T, nCTA, 4, U, B]  the gates' gradients (x W_x + b's gradient; with h_{t-1}, W_h's)
//   dh0, dc0 [nCTA, U, B]      the initial state's gradients
// Shared memory: W_h's rows for this CTA's units [U][4H], R rows of dz_t [4H][pitch], and the
// carried gradients dh and dc [U][B] each.
extern "C" __global__ void __launch_bounds__(256) lstm_bwd(const float* __restrict__ dh_out,
                                                           const float* __restrict__ dc_T,
                                                           const float* __restrict__ gates,
                                                           const float* __restrict__ cs,
                                                           const float* __restrict__ c0,
                                                           const float* __restrict__ wh, float* dz,
                                                           float* __restrict__ dh0, float* __restrict__ dc0,
                                                           unsigned int* barrier, int T, int B, int H, int U, int R) {
  RNNKIT_DYNAMIC_SHARED(smem4);
  const int n_cta = gridDim.x, k = blockIdx.x, G = 4 * H, pitch = quads(R);
  float* w_s = reinterpret_cast<float*>(smem4);  // [U][4H]: row k*U + u of W_h, columns CTA-major
  float* z_s = w_s + quads(U * G);               // [4H][pitch]: staged rows of dz_t, by column
  float* dh_s = z_s + G * pitch;                 // [U][B]
  float* dc_s = dh_s + U * B;                    // [U][B]

  for (int e = threadIdx.x; e < U * G; e += blockDim.x) w_s[e] = wh[(size_t)k * U * G + e];
  for (int e = threadIdx.x; e < U * B; e += blockDim.x) {
    dh_s[e] = 0.f;
    dc_s[e] = dc_T[(size_t)k * U * B + e];
  }
  __syncthreads();

  for (int t = T - 1; t >= 0; --t) {
    const size_t mine = (size_t)k * U * B;                      // this CTA's [U][B] in a state
    const float* g_t = gates + ((size_t)t * n_cta + k) * 4 * U * B;
    float* dz_t = dz + (size_t)t * 4 * H * B;                   // all CTAs' [nCTA][4][U][B]
    for (int p = threadIdx.x; p < U * B; p += blockDim.x) {    // p = u * B + b
      const float si = g_t[p], tj = g_t[(size_t)U * B + p], sf = g_t[(size_t)2 * U * B + p];
      const float so = g_t[(size_t)3 * U * B + p];
      const float c = cs[(size_t)t * B * H + mine + p];
      const float c_prev = t == 0 ? c0[mine + p] : cs[(size_t)(t - 1) * B * H + mine + p];
      const float dh = dh_out[(size_t)t * B * H + mine + p] + dh_s[p];
      const float tc = tanhf(c);
      const float dc = dc_s[p] + dh * so * (1.f - tc * tc);
      float* out = dz_t + (size_t)k * 4 * U * B + p;
      out[0] = dc * tj * si * (1.f - si);
      out[(size_t)U * B] = dc * si * (1.f - tj * tj);
      out[(size_t)2 * U * B] = dc * c_prev * sf * (1.f - sf);
      out[(size_t)3 * U * B] = dh * tc * so * (1.f - so);
      dc_s[p] = dc * sf;
    }
    grid_barrier(barrier, (unsigned int)(T - t));
    // dh_{t-1} for this CTA's units: dz_t's rows (all 4H columns, CTA-major like w_s) times
    // W_h's rows, R batch rows at a time.
    for (int r0 = 0; r0 < B; r0 += R) {
      const int rows = min(R, B - r0);
      stage_rows(z_s, pitch, dz_t, G, B, r0, rows, [=](int col) { return (size_t)col * B; });
      for (int p = threadIdx.x; p < U * rows; p += blockDim.x) {
        const int u = p / rows, b = p % rows;
        const float* zcol = z_s + b;
        const float* w = w_s + u * G;  // the same address across the warp: a broadcast
        float acc = 0.f;
#pragma unroll 8
        for (int q = 0; q < G; ++q) acc = fmaf(zcol[q * pitch], w[q], acc);
        dh_s[u * B + r0 + b] = acc;
      }
      __syncthreads();
    }
  }
  for (int e = threadIdx.x; e < U * B; e += blockDim.x) {
    dh0[(size_t)k * U * B + e] = dh_s[e];
    dc0[(size_t)k * U * B + e] = dc_s[e];
  }
}

// ---------------------------------------------------------------------------------------------
// TF1's GRUCell (reset before the candidate's product): r, u = sigmoid(x W_xg + b_g + h W_g)
// (columns [0, H) and [H, 2H)), c = tanh(x W_xc + b_c + (r h) W_c), h' = u h + (1 - u) c. The
// candidate's product needs every unit's r h, so each step has two phases and two barriers.
//   zx     [T, nCTA, 3, U, B]  x W_x + b: r, u, candidate
//   wg     [H, nCTA, 2, U]     W_g's columns (r, u) CTA-major; wc [H, nCTA, U] W_c's
//   h0     [nCTA, U, B]; hs [T, nCTA, U, B] every step's h
//   rh     [T, nCTA, U, B]     every step's r h (exchanged between CTAs; the backward pass
//                              reads it for W_c's gradient)
//   saved  [T, nCTA, 3, U, B]  training only (else null): r, u, c
// Shared memory: W_g's slice [H][U] of (r, u), W_c's [H][U], R staged rows [H][pitch] (of h_{t-1},
// then of r h), and this step's u per (unit, row) [U][B].
extern "C" __global__ void __launch_bounds__(256) gru_fwd(const float* __restrict__ zx,
                                                          const float* __restrict__ wg,
                                                          const float* __restrict__ wc,
                                                          const float* __restrict__ h0, float* hs, float* rh,
                                                          float* __restrict__ saved, unsigned int* barrier,
                                                          int T, int B, int H, int U, int R) {
  RNNKIT_DYNAMIC_SHARED(smem4);
  const int n_cta = gridDim.x, k = blockIdx.x, pitch = quads(R);
  float* base = reinterpret_cast<float*>(smem4);
  float2* wg_s = reinterpret_cast<float2*>(base);  // [H][U] of (r, u)
  float* wc_s = base + quads(2 * H * U);           // [H][U]
  float* h_s = wc_s + quads(H * U);                // [H][pitch]: staged rows of h_{t-1} or r h
  float* u_s = h_s + H * pitch;                     // [U][B]: this step's u

  for (int e = threadIdx.x; e < H * U; e += blockDim.x) {
    const int q = e / U, u = e % U;
    const float* g = wg + ((size_t)q * n_cta + k) * 2 * U + u;
    wg_s[e] = make_float2(g[0], g[U]);
    wc_s[e] = wc[((size_t)q * n_cta + k) * U + u];
  }
  __syncthreads();

  for (int t = 0; t < T; ++t) {
    const float* h_prev = t == 0 ? h0 : hs + (size_t)(t - 1) * B * H;  // [nCTA][U][B]
    const float* z_t = zx + ((size_t)t * n_cta + k) * 3 * U * B;       // this CTA's [3][U][B]
    const size_t mine = (size_t)k * U * B;
    float* rh_t = rh + (size_t)t * B * H;
    float* s_t = saved ? saved + ((size_t)t * n_cta + k) * 3 * U * B : nullptr;
    // Phase 1: r and u; r h to every CTA.
    for (int r0 = 0; r0 < B; r0 += R) {
      const int rows = min(R, B - r0);
      stage_rows(h_s, pitch, h_prev, H, B, r0, rows, [=](int col) { return (size_t)col * B; });
      for (int p = threadIdx.x; p < U * rows; p += blockDim.x) {
        const int u = p / rows, b = p % rows;
        const float* hcol = h_s + b;
        const float2* w = wg_s + u;
        float ar = 0.f, au = 0.f;
#pragma unroll 8
        for (int q = 0; q < H; ++q) {
          const float hv = hcol[q * pitch];
          const float2 wq = w[q * U];
          ar = fmaf(hv, wq.x, ar);
          au = fmaf(hv, wq.y, au);
        }
        const size_t at = (size_t)u * B + r0 + b;
        const float r = sigmoid_f(ar + z_t[at]), ug = sigmoid_f(au + z_t[(size_t)U * B + at]);
        u_s[at] = ug;
        rh_t[mine + at] = r * hcol[(k * U + u) * pitch];
        if (s_t) {
          s_t[at] = r;
          s_t[(size_t)U * B + at] = ug;
        }
      }
      __syncthreads();
    }
    grid_barrier(barrier, (unsigned int)(2 * t + 1));
    // Phase 2: the candidate from every unit's r h, then h'.
    float* h_next = hs + (size_t)t * B * H;
    for (int r0 = 0; r0 < B; r0 += R) {
      const int rows = min(R, B - r0);
      stage_rows(h_s, pitch, rh_t, H, B, r0, rows, [=](int col) { return (size_t)col * B; });
      for (int p = threadIdx.x; p < U * rows; p += blockDim.x) {
        const int u = p / rows, b = p % rows;
        const float* rcol = h_s + b;
        const float* w = wc_s + u;
        float ac = 0.f;
#pragma unroll 8
        for (int q = 0; q < H; ++q) ac = fmaf(rcol[q * pitch], w[q * U], ac);
        const size_t at = (size_t)u * B + r0 + b;
        const float c = tanhf(ac + z_t[(size_t)2 * U * B + at]), ug = u_s[at];
        const float h_old = __ldcg(h_prev + mine + at);
        h_next[mine + at] = ug * h_old + (1.f - ug) * c;
        if (s_t) s_t[(size_t)2 * U * B + at] = c;
      }
      __syncthreads();
    }
    grid_barrier(barrier, (unsigned int)(2 * t + 2));
  }
}

// The GRU's backward pass, two phases a step as forward:
//   1. dcz = dh (1 - u)(1 - c^2) (the candidate's pre-activation gradient) to every CTA;
//   2. after a barrier, d(r h) = dcz W_c^T for this CTA's units, then the gates' gradients
//      dgz = (d(r h) h r (1 - r), dh (h - c) u (1 - u)) to every CTA;
//   3. after a barrier, dh_{t-1} = dh u + d(r h) r + dgz W_g^T for this CTA's units.
//   dh_out [T, nCTA, U, B]; saved [T, nCTA, 3, U, B] (r, u, c); hs and h0 as forward; wg, wc
//   as forward -> dz [T, nCTA, 3, U, B] (x W_x + b's gradient: dgz_r, dgz_u, dcz), dh0.
// Shared memory: W_g's rows for this CTA's units [U][2H] and W_c's [U][H] (columns CTA-major),
// R staged rows [2H][pitch], and per (unit, row) the carried dh, this step's dh and d(r h).
extern "C" __global__ void __launch_bounds__(256) gru_bwd(const float* __restrict__ dh_out,
                                                          const float* __restrict__ saved,
                                                          const float* __restrict__ hs,
                                                          const float* __restrict__ h0,
                                                          const float* __restrict__ wg,
                                                          const float* __restrict__ wc, float* dz,
                                                          float* __restrict__ dh0, unsigned int* barrier,
                                                          int T, int B, int H, int U, int R) {
  RNNKIT_DYNAMIC_SHARED(smem4);
  const int n_cta = gridDim.x, k = blockIdx.x, G2 = 2 * H, pitch = quads(R);
  float* wg_s = reinterpret_cast<float*>(smem4);  // [U][2H]
  float* wc_s = wg_s + quads(U * G2);             // [U][H]
  float* z_s = wc_s + quads(U * H);               // [2H][pitch]: staged rows of dz_t, by column
  float* carry_s = z_s + G2 * pitch;              // [U][B]: dh_{t} from step t+1
  float* dh_s = carry_s + U * B;                  // [U][B]: this step's whole dh
  float* drh_s = dh_s + U * B;                    // [U][B]: this step's d(r h)

  for (int e = threadIdx.x; e < U * G2; e += blockDim.x) wg_s[e] = wg[(size_t)k * U * G2 + e];
  for (int e = threadIdx.x; e < U * H; e += blockDim.x) wc_s[e] = wc[(size_t)k * U * H + e];
  for (int e = threadIdx.x; e < U * B; e += blockDim.x) carry_s[e] = 0.f;
  __syncthreads();

  const size_t mine = (size_t)k * U * B;
  for (int t = T - 1; t >= 0; --t) {
    const float* s_t = saved + ((size_t)t * n_cta + k) * 3 * U * B;
    const float* h_prev = t == 0 ? h0 : hs + (size_t)(t - 1) * B * H;
    float* dz_t = dz + (size_t)t * 3 * H * B;  // all CTAs' [nCTA][3][U][B]
    float* mine_dz = dz_t + (size_t)k * 3 * U * B;
    for (int p = threadIdx.x; p < U * B; p += blockDim.x) {
      const float ug = s_t[(size_t)U * B + p], c = s_t[(size_t)2 * U * B + p];
      const float dh = dh_out[(size_t)t * B * H + mine + p] + carry_s[p];
      dh_s[p] = dh;
      mine_dz[(size_t)2 * U * B + p] = dh * (1.f - ug) * (1.f - c * c);
    }
    grid_barrier(barrier, (unsigned int)(2 * (T - t) - 1));
    // d(r h) for this CTA's units from every CTA's dcz (dz_t's third block in each CTA's part).
    for (int r0 = 0; r0 < B; r0 += R) {
      const int rows = min(R, B - r0);
      stage_rows(z_s, pitch, dz_t, H, B, r0, rows, [=](int col) {  // unit col = j*U + u: CTA j's third block
        return ((size_t)(col / U) * 3 + 2) * U * B + (size_t)(col % U) * B;
      });
      for (int p = threadIdx.x; p < U * rows; p += blockDim.x) {
        const int u = p / rows, b = p % rows;
        const float* zcol = z_s + b;
        const float* w = wc_s + u * H;
        float acc = 0.f;
#pragma unroll 8
        for (int q = 0; q < H; ++q) acc = fmaf(zcol[q * pitch], w[q], acc);
        const size_t at = (size_t)u * B + r0 + b;
        drh_s[at] = acc;
        const float r = s_t[at], ug = s_t[(size_t)U * B + at], c = s_t[(size_t)2 * U * B + at];
        const float h = __ldcg(h_prev + mine + at), dh = dh_s[at];
        mine_dz[at] = acc * h * r * (1.f - r);
        mine_dz[(size_t)U * B + at] = dh * (h - c) * ug * (1.f - ug);
      }
      __syncthreads();
    }
    grid_barrier(barrier, (unsigned int)(2 * (T - t)));
    // dh_{t-1} for this CTA's units: dh u + d(r h) r + dgz W_g^T.
    for (int r0 = 0; r0 < B; r0 += R) {
      const int rows = min(R, B - r0);
      // Column col = (CTA j, gate, unit): CTA j's first two blocks.
      stage_rows(z_s, pitch, dz_t, G2, B, r0, rows, [=](int col) {
        return (size_t)(col / (2 * U)) * 3 * U * B + (size_t)(col % (2 * U)) * B;
      });
      for (int p = threadIdx.x; p < U * rows; p += blockDim.x) {
        const int u = p / rows, b = p % rows;
        const float* zcol = z_s + b;
        const float* w = wg_s + u * G2;
        float acc = 0.f;
#pragma unroll 8
        for (int q = 0; q < G2; ++q) acc = fmaf(zcol[q * pitch], w[q], acc);
        const size_t at = (size_t)u * B + r0 + b;
        carry_s[at] = dh_s[at] * s_t[(size_t)U * B + at] + drh_s[at] * s_t[at] + acc;
      }
      __syncthreads();
    }
  }
  for (int e = threadIdx.x; e < U * B; e += blockDim.x) dh0[mine + e] = carry_s[e];
}
