// ops::rope and its backward ops::rope_backward on the CPU: one rotation per channel pair (i, i+half)
// of each head; the backward applies the transposed rotation (sin negated), the exact gradient of
// the forward's linear map with the same float cos/sin.
//
// Rounding as transformers' default RoPE (float32 throughout): inv_freq = 1 / theta^(2i/rotary_dim)
// from a float pow, the angle inv_freq * position as one float product, then cos/sin of that float
// angle. At position 1e5 the float rounding of the angle alone moves it by up to 4e-3 rad, so this matters.
// The cos/sin of a row's position are computed once per row and reused by all its heads; one token
// per sequence (decode) costs rotary_dim/2 sincos pairs.
#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/cpu/op_util.h"
#include "ops/dispatch.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

namespace {

void rotate(const char* op, Tensor& x, const Tensor& positions, const RopeParams& p, float sin_sign) {
  using detail::describe;
  SSM_CHECK(detail::is_f32_rows(x) && (x.dim() == 2 || x.dim() == 3),
            "{}: x must be F32 rows [B,T,H*head_dim] or [B,H*head_dim], got {}", op, describe(x));
  const int64_t width = x.size(-1);
  SSM_CHECK(p.head_dim > 0 && width % p.head_dim == 0, "{}: head_dim {} does not divide the width {} of x", op,
            p.head_dim, width);
  SSM_CHECK(p.rotary_dim > 0 && p.rotary_dim % 2 == 0 && p.rotary_dim <= p.head_dim,
            "{}: rotary_dim {} must be even and in [2, head_dim {}]", op, p.rotary_dim, p.head_dim);
  SSM_CHECK(std::isfinite(p.theta) && p.theta > 0.0f, "{}: theta {} must be positive", op, p.theta);
  const Shape pos_shape(x.shape().begin(), x.shape().end() - 1);
  SSM_CHECK(positions.defined() && positions.device() == Device::CPU && positions.dtype() == DType::I32 &&
                positions.shape() == pos_shape && positions.is_contiguous(),
            "{}: positions must be I32 {} for x {}, got {}", op, shape_str(pos_shape), describe(x),
            describe(positions));
  const int64_t rows = x.rows(), half = p.rotary_dim / 2, heads = width / p.head_dim, ld = x.row_stride();
  if (rows == 0) return;

  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv_freq[size_t(i)] = detail::rope_inv_freq(p.theta, p.rotary_dim, i);
  const int32_t* pos = positions.data<int32_t>();
  float* xp = x.data<float>();
#pragma omp parallel if (rows * heads * half >= (1 << 15))
  {
    std::vector<float> cos_sin(static_cast<size_t>(2 * half));
    float* cs = cos_sin.data();
    float* sn = cs + half;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float position = float(pos[r]);
      for (int64_t i = 0; i < half; ++i) {
        const float angle = inv_freq[size_t(i)] * position;
        cs[i] = std::cos(angle);
        sn[i] = sin_sign * std::sin(angle);
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* x0 = xp + r * ld + h * p.head_dim;
        float* x1 = x0 + half;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float a = x0[i], b = x1[i];
          x0[i] = a * cs[i] - b * sn[i];
          x1[i] = b * cs[i] + a * sn[i];
        }
      }
    }
  }
}

}  // namespace

float detail::rope_inv_freq(float theta, int64_t rotary_dim, int64_t i) {
  return 1.0f / std::pow(theta, float(2 * i) / float(rotary_dim));
}

void rope(Tensor& x, const Tensor& positions, const RopeParams& params) {
  SSM_GPU_DISPATCH(x, rope, x, positions, params);
  rotate("rope", x, positions, params, 1.0f);
}

void rope_backward(Tensor& dx, const Tensor& positions, const RopeParams& params) {
  SSM_GPU_DISPATCH(dx, rope_backward, dx, positions, params);
  rotate("rope_backward", dx, positions, params, -1.0f);
}

}  // namespace ssm::ops
