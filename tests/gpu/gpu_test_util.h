// Helpers of the GPU tests: random host tensors moved to the GPU in F32 or BF16, GPU outputs
// poisoned with NaN, results brought back as F32, and the relative error of a GPU op against the
// CPU op on the same inputs.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/device.h"
#include "core/random.h"
#include "core/tensor.h"

namespace ssm::gpu_test {

// Fails the test (never skips) on a machine without a usable GPU.
inline void require_gpu() { ASSERT_TRUE(cuda_available()) << "the GPU tests need a CUDA GPU"; }

inline Tensor random_cpu(const Shape& shape, Rng& rng, double lo = -1.0, double hi = 1.0) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = rng.uniform(float(lo), float(hi));
  return t;
}

// The host tensor as `dtype` on the GPU. Host values are first rounded to `dtype` so that the CPU op
// can be given exactly what the GPU sees (see rounded()).
inline Tensor to_gpu(const Tensor& host, DType dtype = DType::F32) { return host.to(dtype).to_device(Device::CUDA); }
// The host tensor rounded through `dtype` (what to_gpu gives the GPU), as F32 on the CPU.
inline Tensor rounded(const Tensor& host, DType dtype) { return host.to(dtype).to(DType::F32); }

// A GPU tensor of `shape` full of NaN, so that an element a kernel does not write shows up.
inline Tensor nan_gpu(const Shape& shape, DType dtype = DType::F32) {
  Tensor host = Tensor::empty(shape);
  host.fill(std::numeric_limits<float>::quiet_NaN());
  return to_gpu(host, dtype);
}

inline Tensor to_cpu(const Tensor& gpu) { return gpu.contiguous().to_device(Device::CPU).to(DType::F32); }

// A rows tensor on the GPU that is the column slice [offset, offset + W) of a NaN-filled
// [..., offset + W + 8] tensor, so that its row stride is not its width. Offset 8 keeps every row
// 16-byte aligned where W allows (the kernels' 16-byte path); an odd offset does not (their
// one-element path).
struct StridedGpu {
  Tensor wide, view;
  int64_t offset = 0;

  // Whether every column outside the slice is still NaN: nothing was written out of bounds.
  bool padding_untouched() const {
    const Tensor host = to_cpu(wide);
    const int64_t wide_width = host.size(-1), width = view.size(-1);
    for (int64_t r = 0; r < host.rows(); ++r) {
      for (int64_t c = 0; c < wide_width; ++c) {
        if ((c < offset || c >= offset + width) && !std::isnan(host.data<float>()[r * wide_width + c])) return false;
      }
    }
    return true;
  }
};

// NaN everywhere, or `host` (rounded to `dtype`) inside the slice when given.
inline StridedGpu strided_gpu(const Shape& shape, DType dtype, int64_t offset, const Tensor* host = nullptr) {
  Shape wide_shape = shape;
  wide_shape.back() += offset + 8;
  StridedGpu s;
  s.wide = nan_gpu(wide_shape, dtype);
  s.view = s.wide.slice(-1, offset, shape.back());
  s.offset = offset;
  if (host) s.view.copy_from(host->to(dtype));
  return s;
}

// A GPU rows tensor of `shape` holding `host` (rounded to `dtype`), or NaN without it: contiguous for
// offset 0, else the strided column slice of strided_gpu (padding_untouched is then the real check).
inline StridedGpu gpu_rows(const Shape& shape, DType dtype, int64_t offset, const Tensor* host = nullptr) {
  if (offset) return strided_gpu(shape, dtype, offset, host);
  StridedGpu s;
  s.view = host ? to_gpu(*host, dtype) : nan_gpu(shape, dtype);
  s.wide = s.view;
  return s;
}

// Whether two tensors hold the same values bit for bit (a deterministic GPU op run twice).
inline bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor ha = to_cpu(a), hb = to_cpu(b);
  return ha.shape() == hb.shape() && std::memcmp(ha.raw(), hb.raw(), ha.nbytes()) == 0;
}

// max |got - want| / max |want| (NaN anywhere in got gives infinity).
inline double relative_error(const Tensor& got, const Tensor& want) {
  const Tensor g = got.contiguous(), w = want.contiguous();
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    const double a = g.data<float>()[i], b = w.data<float>()[i];
    if (std::isnan(a)) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::fabs(a - b));
    scale = std::max(scale, std::fabs(b));
  }
  return diff / std::max(scale, 1e-30);
}

// a − b on the host (F32 tensors of one shape): what an op that accumulates added to its start
// values, compared on its own so that the start values do not hide an error in it.
inline Tensor difference(const Tensor& a, const Tensor& b) {
  const Tensor x = a.contiguous(), y = b.contiguous();
  Tensor out = Tensor::empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) out.data<float>()[i] = x.data<float>()[i] - y.data<float>()[i];
  return out;
}

// The tolerance of a GPU op against the CPU op: F32 arithmetic in both, or BF16 activations.
inline double tolerance(DType activations) { return activations == DType::F32 ? 1e-5 : 2e-2; }
// A backward op on the GPU against the CPU backward (issue 10: fp32 mode, bf16 mode).
inline double backward_tolerance(DType activations) { return activations == DType::F32 ? 1e-4 : 3e-2; }

// Rope positions of `shape` (I32, on the CPU) uniform in [0, max], max itself at the first element.
inline Tensor positions_tensor(const Shape& shape, Rng& rng, int32_t max) {
  Tensor t = Tensor::empty(shape, DType::I32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int32_t>()[i] = int32_t(rng.below(uint64_t(max) + 1));
  if (t.numel() > 0) t.data<int32_t>()[0] = max;  // the largest position always appears
  return t;
}

// A rope case of the rope and rope-backward GPU tests.
struct RopeCase {
  Shape shape;  // [B,T,H*head_dim] or [B,H*head_dim]
  int64_t head_dim, rotary_dim;
  float theta;
  int32_t max_position;
};

}  // namespace ssm::gpu_test
