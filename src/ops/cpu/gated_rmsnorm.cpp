// ops::gated_rmsnorm on the CPU: mamba_ssm RMSNormGated, normalised per group of `group_size`
// channels. Rows are independent and spread over OpenMP threads; y may alias x or z.
#include <cmath>

#include "core/error.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows, is_f32_vec
#include "ops/cpu/scratch.h"
#include "ops/cpu/vec_math.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {
using vec::f32x16;
constexpr int64_t kLanes = vec::kLanes;

inline float silu_f(float v) { return vec::silu(v); }
}  // namespace

void gated_rmsnorm(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size, bool norm_before_gate,
                   float eps, Tensor& y) {
  SSM_GPU_DISPATCH(y, gated_rmsnorm, x, z, w, group_size, norm_before_gate, eps, y);
  using detail::describe;
  SSM_CHECK(detail::is_f32_rows(x), "gated_rmsnorm: x must be an F32 rows tensor [..., W], got {}", describe(x));
  const int64_t width = x.size(-1);
  SSM_CHECK(!z.defined() || detail::is_f32_rows(z, x.shape()),
            "gated_rmsnorm: z must be F32 rows of x's shape {}, got {}", shape_str(x.shape()), describe(z));
  SSM_CHECK(detail::is_f32_vec(w, width), "gated_rmsnorm: w must be F32 [{}], got {}", width, describe(w));
  SSM_CHECK(group_size > 0 && width % group_size == 0,
            "gated_rmsnorm: group_size {} does not divide the width {} of x {}", group_size, width,
            shape_str(x.shape()));
  SSM_CHECK(detail::is_f32_rows(y, x.shape()), "gated_rmsnorm: y must be F32 rows of shape {}, got {}",
            shape_str(x.shape()), describe(y));

  const int64_t rows = x.rows();
  if (rows == 0 || width == 0) return;
  const int64_t ldx = x.row_stride(), ldy = y.row_stride();
  const int64_t ldz = z.defined() ? z.row_stride() : 0;
  const float* xp = x.data<float>();
  const float* zp = z.defined() ? z.data<float>() : nullptr;
  const float* wp = w.data<float>();
  float* yp = y.data<float>();
  const float inv_gs = 1.0f / float(group_size);
  const int64_t vec_end = group_size / kLanes * kLanes;

#pragma omp parallel if (rows * width >= 16384)
  {
    thread_local detail::Scratch buf;
    float* u = buf.get<float>(size_t(group_size));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = xp + r * ldx;
      const float* zr = zp ? zp + r * ldz : nullptr;
      float* yr = yp + r * ldy;
      for (int64_t g0 = 0; g0 < width; g0 += group_size) {
        const float* xg = xr + g0;
        const float* zg = zr ? zr + g0 : nullptr;
        const float* wg = wp + g0;
        float* yg = yr + g0;
        // Pass 1: the values to normalise (x, or x * silu(z) kept in u) and their sum of squares.
        const float* v = xg;
        if (zg && !norm_before_gate) {
          for (int64_t i = 0; i < vec_end; i += kLanes)
            vec::store(u + i, vec::load(xg + i) * vec::silu(vec::load(zg + i)));
          for (int64_t i = vec_end; i < group_size; ++i) u[i] = xg[i] * silu_f(zg[i]);
          v = u;
        }
        f32x16 acc{};
        for (int64_t i = 0; i < vec_end; i += kLanes) {
          const f32x16 e = vec::load(v + i);
          acc += e * e;
        }
        float ss = vec::reduce_add(acc);
        for (int64_t i = vec_end; i < group_size; ++i) ss += v[i] * v[i];
        const float inv = 1.0f / std::sqrt(ss * inv_gs + eps);
        // Pass 2: y = v * inv * w (* silu(z) when the gate comes after the norm). y may alias x or z:
        // each element is read before it is written.
        if (zg && norm_before_gate) {
          for (int64_t i = 0; i < vec_end; i += kLanes)
            vec::store(yg + i, vec::load(v + i) * inv * vec::load(wg + i) * vec::silu(vec::load(zg + i)));
          for (int64_t i = vec_end; i < group_size; ++i) yg[i] = v[i] * inv * wg[i] * silu_f(zg[i]);
        } else {
          for (int64_t i = 0; i < vec_end; i += kLanes) vec::store(yg + i, vec::load(v + i) * inv * vec::load(wg + i));
          for (int64_t i = vec_end; i < group_size; ++i) yg[i] = v[i] * inv * wg[i];
        }
      }
    }
  }
}

}  // namespace ssm::ops
