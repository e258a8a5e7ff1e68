// The mLSTM's inputs for the GPU tests (test_xlstm_ops_gpu.cpp, test_xlstm_backward_gpu.cpp): random tokens on the
// host, q, k, v rounded through the activation dtype, placed as op inputs on the CPU or the GPU.
#pragma once
#include <string>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"

namespace ssm::gpu_test {

struct MlstmCase {
  int64_t batch, T, H, dk, dv, chunk;
  int64_t offset = 0;  // inputs as column slices at this offset (0: contiguous)
};

inline std::string describe(const MlstmCase& c, DType dt) {
  return fmt::format("{} B {} T {} H {} dk {} dv {} chunk {} offset {}", dtype_name(dt), c.batch, c.T, c.H, c.dk, c.dv,
                     c.chunk, c.offset);
}

// Every token's inputs on the host, q, k, v rounded through dt (the gates stay F32): gates in the soft-capped range of
// a model, input gates from far below zero (a fresh model's −10 bias: exp(−m) wins the denominator) to above.
struct MlstmData {
  Tensor q, k, v, i, f;
};

inline MlstmData make_data(const MlstmCase& c, DType dt, uint64_t seed) {
  Rng rng(seed);
  MlstmData d;
  d.q = rounded(random_cpu({c.batch, c.T, c.H * c.dk}, rng, -2, 2), dt);
  d.k = rounded(random_cpu({c.batch, c.T, c.H * c.dk}, rng, -2, 2), dt);
  d.v = rounded(random_cpu({c.batch, c.T, c.H * c.dv}, rng), dt);
  d.i = random_cpu({c.batch, c.T, c.H}, rng, -12, 4);
  d.f = random_cpu({c.batch, c.T, c.H}, rng, -1, 6);
  return d;
}

// Tokens [t0, t0 + n) as op inputs ([B, width] of token t0 for a step), on the CPU or the GPU.
struct Placed {
  ops::MlstmInputs in;
  std::vector<StridedGpu> keep;  // the GPU tensors the slices live in
};

inline Placed place(const MlstmCase& c, const MlstmData& d, int64_t t0, int64_t n, bool step, Device device, DType dt) {
  Placed p;
  const auto take = [&](const Tensor& all, DType on_gpu) {
    Tensor part = all.slice(1, t0, n);
    part = step ? part.select(1, 0).contiguous() : part.contiguous();
    if (device == Device::CPU) return part;
    p.keep.push_back(gpu_rows(part.shape(), on_gpu, c.offset, &part));
    return p.keep.back().view;
  };
  p.in.q = take(d.q, dt);
  p.in.k = take(d.k, dt);
  p.in.v = take(d.v, dt);
  p.in.i = take(d.i, DType::F32);
  p.in.f = take(d.f, DType::F32);
  p.in.n_heads = c.H;
  p.in.chunk_size = c.chunk;
  return p;
}

}  // namespace ssm::gpu_test
