// Backward of ops::activation and ops::gated_activation on the CPU, elementwise like the forward.
// Every input element is read before any output element at that position is written, so outputs
// may alias inputs at the same positions (dx = dy; dgate = gate, dup = up).
#include <type_traits>

#include "core/error.h"
#include "ops/cpu/activation_math.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

using detail::describe;
using detail::is_f32_rows;

void activation_backward(Activation act, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx) {
  SSM_GPU_DISPATCH(dx, activation_backward, act, x, dy, dx, accumulate_dx);
  SSM_CHECK(is_f32_rows(x) && is_f32_rows(dy, x.shape()) && is_f32_rows(dx, x.shape()),
            "activation_backward {}: x, dy and dx must be F32 rows of one shape, got {}, {} and {}",
            activation_name(act), describe(x), describe(dy), describe(dx));
  const int64_t rows = x.rows(), width = x.size(-1);
  if (x.numel() == 0) return;
  const int64_t ldx = x.row_stride(), lddy = dy.row_stride(), lddx = dx.row_stride();
  const float* xp = x.data<float>();
  const float* dyp = dy.data<float>();
  float* dxp = dx.data<float>();
  detail::dispatch_activation(act, [&](auto kind) {
    detail::for_each_row(rows, width, [&](int64_t r) {
      const float* xr = xp + r * ldx;
      const float* dyr = dyp + r * lddy;
      float* dxr = dxp + r * lddx;
#pragma omp simd
      for (int64_t i = 0; i < width; ++i) {
        const float v = dyr[i] * detail::activation_value_grad<kind.value>(xr[i]).grad;
        dxr[i] = accumulate_dx ? dxr[i] + v : v;
      }
    });
  });
}

void gated_activation_backward(Activation act, const Tensor& gate, const Tensor& up, float gate_scale, const Tensor& dy,
                               Tensor* dgate, Tensor* dup, bool accumulate) {
  SSM_GPU_DISPATCH(dy, gated_activation_backward, act, gate, up, gate_scale, dy, dgate, dup, accumulate);
  const char* op = "gated_activation_backward";
  SSM_CHECK(is_f32_rows(gate) && is_f32_rows(up, gate.shape()) && is_f32_rows(dy, gate.shape()),
            "{} {}: gate, up and dy must be F32 rows of one shape, got {}, {} and {}", op, activation_name(act),
            describe(gate), describe(up), describe(dy));
  if (dgate)
    SSM_CHECK(is_f32_rows(*dgate, gate.shape()), "{}: dgate must be F32 rows {}, got {}", op, shape_str(gate.shape()),
              describe(*dgate));
  if (dup)
    SSM_CHECK(is_f32_rows(*dup, gate.shape()), "{}: dup must be F32 rows {}, got {}", op, shape_str(gate.shape()),
              describe(*dup));
  const int64_t rows = gate.rows(), width = gate.size(-1);
  if (gate.numel() == 0 || (!dgate && !dup)) return;
  const int64_t ldg = gate.row_stride(), ldu = up.row_stride(), lddy = dy.row_stride();
  const int64_t lddg = dgate ? dgate->row_stride() : 0, lddu = dup ? dup->row_stride() : 0;
  const float* gp = gate.data<float>();
  const float* up_p = up.data<float>();
  const float* dyp = dy.data<float>();
  float* dgp = dgate ? dgate->data<float>() : nullptr;
  float* dup_p = dup ? dup->data<float>() : nullptr;
  // One loop per (activation, outputs wanted, accumulate): branches inside the loop would stop it
  // vectorising.
  auto with_flag = [](bool flag, auto&& f) { flag ? f(std::true_type{}) : f(std::false_type{}); };
  with_flag(dgate != nullptr, [&](auto want_dgate) {
    with_flag(dup != nullptr, [&](auto want_dup) {
      with_flag(accumulate, [&](auto add) {
        detail::dispatch_activation(act, [&](auto kind) {
          detail::for_each_row(rows, width, [&](int64_t r) {
            const float* gr = gp + r * ldg;
            const float* ur = up_p + r * ldu;
            const float* dyr = dyp + r * lddy;
            float* dgr = dgp + r * lddg;
            float* dur = dup_p + r * lddu;
#pragma omp simd
            for (int64_t i = 0; i < width; ++i) {
              const float g = gr[i], u = ur[i], d = dyr[i];
              const detail::ValueGrad a = detail::activation_value_grad<kind.value>(gate_scale * g);
              const float dg = d * u * gate_scale * a.grad, du = d * a.value;
              if constexpr (want_dgate.value) dgr[i] = add.value ? dgr[i] + dg : dg;
              if constexpr (want_dup.value) dur[i] = add.value ? dur[i] + du : du;
            }
          });
        });
      });
    });
  });
}

}  // namespace ssm::ops
