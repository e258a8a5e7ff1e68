// The optimizer's elementwise work on the CPU (declared in ops.h).
#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {

void check_f32(const char* op, const Tensor& t, const Tensor& like) {
  SSM_CHECK(t.defined() && t.dtype() == DType::F32 && t.is_contiguous() && t.shape() == like.shape() &&
                t.device() == like.device(),
            "{}: tensors must be contiguous F32 of one shape on one device, got {} and {}", op, shape_str(t.shape()),
            shape_str(like.shape()));
}

}  // namespace

void add_product_inplace(Tensor& acc, const Tensor& a, const Tensor& b) {
  check_f32("add_product_inplace", a, acc);
  check_f32("add_product_inplace", b, acc);
  check_f32("add_product_inplace", acc, acc);
  SSM_GPU_DISPATCH(acc, add_product_inplace, acc, a, b);
  float* out = acc.data<float>();
  const float *pa = a.data<float>(), *pb = b.data<float>();
  for (int64_t i = 0; i < acc.numel(); ++i) out[i] += pa[i] * pb[i];
}

double sum_of_squares(const std::vector<const Tensor*>& tensors) {
  if (tensors.empty()) return 0.0;
  for (const Tensor* t : tensors) check_f32("sum_of_squares", *t, *t);
  SSM_GPU_DISPATCH(*tensors[0], sum_of_squares, tensors);
  constexpr int64_t kBlock = 1 << 16;
  double total = 0.0;
  for (const Tensor* t : tensors) {
    const float* p = t->data<float>();
    const int64_t n = t->numel(), blocks = (n + kBlock - 1) / kBlock;
    std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
#pragma omp parallel for schedule(static) if (blocks > 1)
    for (int64_t b = 0; b < blocks; ++b) {
      double s = 0.0;
      const int64_t end = std::min(n, (b + 1) * kBlock);
      for (int64_t i = b * kBlock; i < end; ++i) s += double(p[i]) * double(p[i]);
      partial[size_t(b)] = s;
    }
    for (double s : partial) total += s;
  }
  return total;
}

void adamw_update(const std::vector<AdamWTensor>& tensors, const AdamWStep& step) {
  if (tensors.empty()) return;
  for (const AdamWTensor& t : tensors) {
    check_f32("adamw_update", *t.grad, *t.param);
    check_f32("adamw_update", *t.m, *t.param);
    check_f32("adamw_update", *t.v, *t.param);
    check_f32("adamw_update", *t.param, *t.param);
    SSM_CHECK(!t.shadow || (t.shadow->dtype() == DType::BF16 && t.shadow->is_contiguous() &&
                            t.shadow->shape() == t.param->shape() && t.shadow->device() == t.param->device()),
              "adamw_update: a shadow copy must be contiguous BF16 of the parameter's shape and device");
  }
  SSM_GPU_DISPATCH(*tensors[0].param, adamw_update, tensors, step);
  const float b1 = step.beta1, b2 = step.beta2;
  for (const AdamWTensor& t : tensors) {
    float* w = t.param->data<float>();
    const float* g = t.grad->data<float>();
    float* m = t.m->data<float>();
    float* v = t.v->data<float>();
    const float decay = t.decay ? step.decay_factor : 1.0f;
    const int64_t n = t.param->numel();
#pragma omp parallel for simd schedule(static) if (n >= 65536)
    for (int64_t j = 0; j < n; ++j) {
      const float gj = g[j] * step.grad_scale;
      m[j] = b1 * m[j] + (1.0f - b1) * gj;
      v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
      const float denom = std::sqrt(v[j]) / step.bc2_sqrt + step.eps;
      w[j] = w[j] * decay - step.step_size * m[j] / denom;
    }
    if (t.shadow) {
      uint16_t* copy = t.shadow->data<uint16_t>();
      for (int64_t j = 0; j < n; ++j) copy[j] = f32_to_bf16(w[j]);
    }
  }
}

}  // namespace ssm::ops
