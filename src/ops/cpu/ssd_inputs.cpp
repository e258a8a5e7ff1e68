#include "ops/cpu/ssd_inputs.h"

#include "core/error.h"
#include "ops/cpu/op_util.h"  // describe

namespace ssm::ops::detail {

SsdSizes check_ssd_args(const char* op, const SsdInputs& in, const Tensor* state, const Tensor& y, int64_t seq_dims,
                        Device device, DType activations) {
  const char* layout = seq_dims == 3 ? "[B,T," : "[B,";
  const char* where = device == Device::CPU ? "" : " on the GPU";
  const std::string_view act = dtype_name(activations);
  auto is_rows = [&](const Tensor& t) {
    return t.defined() && t.device() == device && t.dtype() == activations && t.dim() == seq_dims &&
           t.has_uniform_rows();
  };
  auto is_vec = [&](const Tensor& t, int64_t n) {
    return t.defined() && t.device() == device && t.dtype() == DType::F32 && t.dim() == 1 && t.size(0) == n &&
           t.is_contiguous();
  };
  SSM_CHECK(is_rows(in.x), "{}: x must be {} rows {}H*P]{}, got {}", op, act, layout, where, describe(in.x));
  SSM_CHECK(is_rows(in.dt), "{}: dt must be {} rows {}H]{}, got {}", op, act, layout, where, describe(in.dt));
  SsdSizes d{};
  d.batch = in.x.size(0);
  d.T = seq_dims == 3 ? in.x.size(1) : 1;
  d.H = in.dt.size(-1);
  d.G = in.n_groups;
  SSM_CHECK(d.H > 0 && in.x.size(-1) % d.H == 0 && in.x.size(-1) > 0,
            "{}: x width {} is not a multiple of the head count {} (x {}, dt {})", op, in.x.size(-1), d.H,
            shape_str(in.x.shape()), shape_str(in.dt.shape()));
  d.P = in.x.size(-1) / d.H;
  for (int64_t i = 0; i + 1 < seq_dims; ++i)
    SSM_CHECK(in.dt.size(i) == in.x.size(i), "{}: dt {} does not match x {}", op, shape_str(in.dt.shape()),
              shape_str(in.x.shape()));
  SSM_CHECK(d.G >= 1 && d.H % d.G == 0, "{}: n_groups {} does not divide the head count {}", op, d.G, d.H);
  SSM_CHECK(is_rows(in.B) && is_rows(in.C), "{}: B and C must be {} rows {}G*N]{}, got B {} C {}", op, act, layout,
            where, describe(in.B), describe(in.C));
  SSM_CHECK(in.B.shape() == in.C.shape(), "{}: B {} and C {} differ in shape", op, shape_str(in.B.shape()),
            shape_str(in.C.shape()));
  for (int64_t i = 0; i + 1 < seq_dims; ++i)
    SSM_CHECK(in.B.size(i) == in.x.size(i), "{}: B {} does not match x {}", op, shape_str(in.B.shape()),
              shape_str(in.x.shape()));
  SSM_CHECK(in.B.size(-1) % d.G == 0 && in.B.size(-1) > 0, "{}: B width {} is not a multiple of n_groups {}", op,
            in.B.size(-1), d.G);
  d.N = in.B.size(-1) / d.G;
  SSM_CHECK(is_vec(in.A, d.H), "{}: A must be F32 [{}]{}, got {}", op, d.H, where, describe(in.A));
  SSM_CHECK(!in.dt_bias.defined() || is_vec(in.dt_bias, d.H), "{}: dt_bias must be F32 [{}]{}, got {}", op, d.H, where,
            describe(in.dt_bias));
  SSM_CHECK(!in.D.defined() || is_vec(in.D, d.H), "{}: D must be F32 [{}]{}, got {}", op, d.H, where, describe(in.D));
  SSM_CHECK(is_rows(y) && y.shape() == in.x.shape(), "{}: y must be {} rows of x's shape {}{}, got {}", op, act,
            shape_str(in.x.shape()), where, describe(y));
  if (state && state->defined()) {
    const Shape want{d.batch, d.H, d.P, d.N};
    SSM_CHECK(state->device() == device && state->dtype() == DType::F32 && state->shape() == want &&
                  state->is_contiguous(),
              "{}: state must be contiguous F32 {}{}, got {}", op, shape_str(want), where, describe(*state));
  }
  return d;
}

}  // namespace ssm::ops::detail
