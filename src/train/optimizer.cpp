#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace ssm {

AdamW::AdamW(std::vector<OptimizerParam> params, const AdamWOptions& options)
    : params_(std::move(params)), options_(options) {
  for (const OptimizerParam& p : params_) {
    SSM_CHECK(p.param && p.grad && p.param->defined() && p.grad->defined(), "AdamW: parameter '{}' has no tensor",
              p.name);
    SSM_CHECK(p.param->dtype() == DType::F32 && p.param->is_contiguous() && p.grad->dtype() == DType::F32 &&
                  p.grad->is_contiguous() && p.param->shape() == p.grad->shape(),
              "AdamW: parameter '{}' and its gradient must be contiguous F32 of one shape, got {} and {}", p.name,
              shape_str(p.param->shape()), shape_str(p.grad->shape()));
    m_.push_back(Tensor::zeros(p.param->shape()));
    v_.push_back(Tensor::zeros(p.param->shape()));
  }
}

void AdamW::step(double lr) {
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const float bc1 = float(1.0 - std::pow(b1, double(steps_)));
  const float bc2_sqrt = float(std::sqrt(1.0 - std::pow(b2, double(steps_))));
  const float step_size = float(lr) / bc1;
  const float fb1 = float(b1), fb2 = float(b2), eps = float(options_.eps);
  for (size_t i = 0; i < params_.size(); ++i) {
    const OptimizerParam& p = params_[i];
    float* w = p.param->data<float>();
    const float* g = p.grad->data<float>();
    float* m = m_[i].data<float>();
    float* v = v_[i].data<float>();
    const float decay = p.weight_decay ? float(1.0 - lr * options_.weight_decay) : 1.0f;
    const int64_t n = p.param->numel();
#pragma omp parallel for simd schedule(static) if (n >= 65536)
    for (int64_t j = 0; j < n; ++j) {
      const float gj = g[j];
      m[j] = fb1 * m[j] + (1.0f - fb1) * gj;
      v[j] = fb2 * v[j] + (1.0f - fb2) * gj * gj;
      const float denom = std::sqrt(v[j]) / bc2_sqrt + eps;
      w[j] = w[j] * decay - step_size * m[j] / denom;
    }
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(params_[i].name + ".exp_avg", m_[i]);
    out.emplace_back(params_[i].name + ".exp_avg_sq", v_[i]);
  }
  return out;
}

void AdamW::load_state(const std::map<std::string, Tensor>& tensors, int64_t steps, const std::string& source) {
  SSM_CHECK(steps >= 0, "'{}': negative optimizer step count {}", source, steps);
  for (size_t i = 0; i < params_.size(); ++i) {
    for (auto [suffix, dest] : {std::pair{".exp_avg", &m_[i]}, {".exp_avg_sq", &v_[i]}}) {
      const std::string name = params_[i].name + suffix;
      auto it = tensors.find(name);
      SSM_CHECK(it != tensors.end(), "'{}': optimizer state '{}' is missing", source, name);
      SSM_CHECK(it->second.shape() == dest->shape() && it->second.dtype() == DType::F32,
                "'{}': optimizer state '{}' is {} {}, expected F32 {}", source, name, shape_str(it->second.shape()),
                dtype_name(it->second.dtype()), shape_str(dest->shape()));
      dest->copy_from(it->second);
    }
  }
  steps_ = steps;
}

double grad_norm(const std::vector<Tensor*>& grads) {
  // Fixed blocks summed in parallel, then added in order: the same result for any thread count.
  constexpr int64_t kBlock = 1 << 16;
  double total = 0.0;
  for (const Tensor* g : grads) {
    const float* p = g->data<float>();
    const int64_t n = g->numel(), blocks = (n + kBlock - 1) / kBlock;
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
  return std::sqrt(total);
}

double clip_grad_norm(const std::vector<Tensor*>& grads, double max_norm) {
  const double norm = grad_norm(grads);
  if (max_norm > 0 && std::isfinite(norm) && norm > max_norm) {
    const float scale = float(max_norm / (norm + 1e-6));
    for (Tensor* g : grads) {
      float* p = g->data<float>();
      const int64_t n = g->numel();
      for (int64_t i = 0; i < n; ++i) p[i] *= scale;
    }
  }
  return norm;
}

void zero_grads(const std::vector<Tensor*>& grads) {
  for (Tensor* g : grads)
    if (g->nbytes()) std::memset(g->raw(), 0, g->nbytes());
}

}  // namespace ssm
