// A dense layer's epilogue on CUDA (built to PTX by trainer/build.rs with the
// `cuda` feature; launched from trainer/src/gpu/kernels.rs). The product x Wᵀ
// runs as candle's cuBLAS matmul; these replace the bias add and activation
// (two launches forward) and their backward (about six, with candle's
// per-edge gradient accumulation) by one launch each way.
//
// act: 0 identity, 1 ReLU, 2 tanh. The arithmetic mirrors the CPU's fused
// dense layer (trainer/src/nn/fused.rs); the parity check holds them together.

// out = act(y + b) for y [rows, cols] row-major (contiguous) and b [cols].
extern "C" __global__ void reflex_bias_act(const float* __restrict__ y,
                                           const float* __restrict__ b,
                                           float* __restrict__ out,
                                           unsigned long long rows, unsigned long long cols,
                                           int act) {
  const unsigned long long n = rows * cols;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
       i += (unsigned long long)blockDim.x * gridDim.x) {
    const float v = y[i] + b[i % cols];
    out[i] = act == 1 ? fmaxf(v, 0.0f) : (act == 2 ? tanhf(v) : v);
  }
}

// out [rows + 1, cols]: rows 0..rows are g ⊙ act'(res) (res = the layer's
// output), row `rows` their column sums (the bias gradient). The sum row must
// be zero on entry. Blocks are 32 columns × 8 row lanes over a tile of
// 256 rows; each thread sums its rows, the 8 lanes are reduced in shared
// memory in a fixed order, and each tile adds its column sums atomically, so
// with more than 256 rows the sums' last bits depend on the tiles' order.
extern "C" __global__ void reflex_preact_grad(const float* __restrict__ g,
                                              const float* __restrict__ res,
                                              float* __restrict__ out,
                                              unsigned long long rows, unsigned long long cols,
                                              int act) {
  const unsigned long long col = blockIdx.x * 32ull + threadIdx.x;
  const unsigned long long row0 = blockIdx.y * 256ull;
  float partial = 0.0f;
  if (col < cols) {
    for (unsigned long long r = row0 + threadIdx.y; r < rows && r < row0 + 256ull; r += 8ull) {
      const unsigned long long i = r * cols + col;
      const float gv = g[i];
      const float yv = res[i];
      const float d = act == 1 ? (yv > 0.0f ? gv : 0.0f) : (act == 2 ? gv * (1.0f - yv * yv) : gv);
      out[i] = d;
      partial += d;
    }
  }
  __shared__ float lanes[8][32];
  lanes[threadIdx.y][threadIdx.x] = partial;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    float s = 0.0f;
    for (int k = 0; k < 8; ++k) s += lanes[k][threadIdx.x];
    atomicAdd(&out[rows * cols + col], s);
  }
}
