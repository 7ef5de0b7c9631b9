// The optimizer's fused CUDA kernels (built to PTX by trainer/build.rs with the
// `cuda` feature; launched from trainer/src/gpu/kernels.rs). Each replaces a
// chain of candle ops, one kernel launch per parameter tensor instead of about
// fifteen, and none of them needs the host to read a value back.
//
// The arithmetic mirrors the CPU passes in trainer/src/optim.rs (Moment,
// AdamParam, Lerp) term for term; the parity check holds the two together.

// Sum of squares of x[0..n) added into *acc (double, like the CPU's f64 sum).
extern "C" __global__ void reflex_sumsq(const float* __restrict__ x,
                                        unsigned long long n,
                                        double* __restrict__ acc) {
  double s = 0.0;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
       i += (unsigned long long)blockDim.x * gridDim.x) {
    double v = (double)x[i];
    s += v * v;
  }
  for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_down_sync(0xffffffffu, s, offset);
  __shared__ double warp_sums[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = s;
  __syncthreads();
  if (warp == 0) {
    const int warps = (blockDim.x + 31) >> 5;
    s = lane < warps ? warp_sums[lane] : 0.0;
    for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_down_sync(0xffffffffu, s, offset);
    if (lane == 0) atomicAdd(acc, s);
  }
}

// One Adam step on one parameter tensor, in place:
//   s = clip scale from the global squared norm *normsq (1 when normsq is null,
//       max_norm < 0, or the norm is within max_norm);
//   m <- b1 m + (1 - b1)(s g);  v <- b2 v + (1 - b2)(s g)^2;
//   p <- p - step_size * m / (sqrt(v / c2) + eps).
__device__ __forceinline__ void adam_body(float* __restrict__ p, float* __restrict__ m,
                                          float* __restrict__ v, const float* __restrict__ g,
                                          unsigned long long n,
                                          const double* __restrict__ normsq, double max_norm,
                                          float beta1, float beta2, float step_size,
                                          float correction2, float eps) {
  float s = 1.0f;
  if (normsq != nullptr && max_norm >= 0.0) {
    const double norm = sqrt(*normsq);
    if (norm > max_norm) s = (float)(max_norm / (norm + 1e-6));
  }
  const float rest1 = 1.0f - beta1, rest2 = 1.0f - beta2, inv_c2 = 1.0f / correction2;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
       i += (unsigned long long)blockDim.x * gridDim.x) {
    const float gi = s * g[i];
    const float mi = beta1 * m[i] + rest1 * gi;
    const float vi = beta2 * v[i] + rest2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] -= step_size * mi / (sqrtf(vi * inv_c2) + eps);
  }
}

extern "C" __global__ void reflex_adam(float* __restrict__ p, float* __restrict__ m,
                                       float* __restrict__ v, const float* __restrict__ g,
                                       unsigned long long n, const double* __restrict__ normsq,
                                       double max_norm, float beta1, float beta2,
                                       float step_size, float correction2, float eps) {
  adam_body(p, m, v, g, n, normsq, max_norm, beta1, beta2, step_size, correction2, eps);
}

// The same step with step_size and correction2 read from device memory
// (hyper[0], hyper[1]), for a CUDA graph: a graph replays its kernels'
// arguments as captured, and these two change every step.
extern "C" __global__ void reflex_adam_graph(float* __restrict__ p, float* __restrict__ m,
                                             float* __restrict__ v, const float* __restrict__ g,
                                             unsigned long long n,
                                             const double* __restrict__ normsq, double max_norm,
                                             float beta1, float beta2,
                                             const float* __restrict__ hyper, float eps) {
  adam_body(p, m, v, g, n, normsq, max_norm, beta1, beta2, hyper[0], hyper[1], eps);
}

// Polyak averaging in place: d <- (1 - tau) d + tau s.
extern "C" __global__ void reflex_lerp(float* __restrict__ d, const float* __restrict__ s,
                                       unsigned long long n, float tau) {
  const float keep = 1.0f - tau;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
       i += (unsigned long long)blockDim.x * gridDim.x) {
    d[i] = keep * d[i] + tau * s[i];
  }
}
