// The LSTM cell on CUDA (built to PTX by trainer/build.rs with the `cuda`
// feature; launched from trainer/src/gpu/kernels.rs): the CPU's fused cell
// (trainer/src/nn/recurrent.rs, FusedCell and FusedCellBackward) as one
// kernel each way, instead of about a dozen candle ops per step forward and
// their backward nodes. Gates are in ONNX's order i | o | f | c; the state is
// packed [h | c]. σ(x) = ½ tanh(x/2) + ½, as on the CPU.

__device__ __forceinline__ float sig(float x) { return 0.5f * tanhf(0.5f * x) + 0.5f; }

// One unit's activated gates and its cell state, for row r, unit j.
struct Unit {
  float i, o, f, cand, c;
};

__device__ __forceinline__ Unit unit(const float* __restrict__ gates,
                                     const float* __restrict__ state, unsigned long long r,
                                     unsigned long long j, unsigned long long hd) {
  const float* g = gates + r * 4 * hd;
  return Unit{sig(g[j]), sig(g[hd + j]), sig(g[2 * hd + j]), tanhf(g[3 * hd + j]),
              state[r * 2 * hd + hd + j]};
}

// out [batch, 2H] = [h' | c'] from gates [batch, 4H] and state [batch, 2H].
extern "C" __global__ void reflex_lstm_cell(const float* __restrict__ gates,
                                            const float* __restrict__ state,
                                            float* __restrict__ out,
                                            unsigned long long batch, unsigned long long hd) {
  const unsigned long long n = batch * hd;
  for (unsigned long long k = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; k < n;
       k += (unsigned long long)blockDim.x * gridDim.x) {
    const unsigned long long r = k / hd, j = k % hd;
    const Unit u = unit(gates, state, r, j, hd);
    const float c_next = u.f * u.c + u.i * u.cand;
    out[r * 2 * hd + hd + j] = c_next;
    out[r * 2 * hd + j] = u.o * tanhf(c_next);
  }
}

// out [batch, 6H] = [d gates | d state] from gates, state and the gradient
// of the new state [batch, 2H]; d h of the state is zero (h reaches the cell
// through the gates' product, whose backward candle computes).
extern "C" __global__ void reflex_lstm_cell_backward(const float* __restrict__ gates,
                                                     const float* __restrict__ state,
                                                     const float* __restrict__ grad,
                                                     float* __restrict__ out,
                                                     unsigned long long batch,
                                                     unsigned long long hd) {
  const unsigned long long n = batch * hd;
  for (unsigned long long k = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; k < n;
       k += (unsigned long long)blockDim.x * gridDim.x) {
    const unsigned long long r = k / hd, j = k % hd;
    const Unit u = unit(gates, state, r, j, hd);
    const float i = u.i, o = u.o, f = u.f, cand = u.cand, c = u.c;
    const float tc = tanhf(f * c + i * cand);
    const float dh = grad[r * 2 * hd + j];
    const float dc = grad[r * 2 * hd + hd + j] + dh * o * (1.0f - tc * tc);
    float* d = out + r * 6 * hd;
    d[j] = dc * cand * i * (1.0f - i);
    d[hd + j] = dh * tc * o * (1.0f - o);
    d[2 * hd + j] = dc * c * f * (1.0f - f);
    d[3 * hd + j] = dc * i * (1.0f - cand * cand);
    d[4 * hd + j] = 0.0f;
    d[5 * hd + j] = dc * f;
  }
}
