#include "train/optimizer.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/ops.h"

namespace ssm {

AdamW::AdamW(std::vector<OptimizerParam> params, const AdamWOptions& options)
    : params_(std::move(params)), options_(options) {
  for (const OptimizerParam& p : params_) {
    SSM_CHECK(p.param && p.grad && p.param->defined() && p.grad->defined(), "AdamW: parameter '{}' has no tensor",
              p.name);
    SSM_CHECK(p.param->dtype() == DType::F32 && p.param->is_contiguous() && p.grad->dtype() == DType::F32 &&
                  p.grad->is_contiguous() && p.param->shape() == p.grad->shape() &&
                  p.param->device() == p.grad->device(),
              "AdamW: parameter '{}' and its gradient must be contiguous F32 of one shape on one device, got {} and {}",
              p.name, shape_str(p.param->shape()), shape_str(p.grad->shape()));
    m_.push_back(Tensor::zeros(p.param->shape(), DType::F32, p.param->device()));
    v_.push_back(Tensor::zeros(p.param->shape(), DType::F32, p.param->device()));
  }
}

void AdamW::step(double lr, float grad_scale) {
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  ops::AdamWStep s;
  s.beta1 = float(b1);
  s.beta2 = float(b2);
  s.eps = float(options_.eps);
  s.step_size = float(lr) / float(1.0 - std::pow(b1, double(steps_)));
  s.bc2_sqrt = float(std::sqrt(1.0 - std::pow(b2, double(steps_))));
  s.decay_factor = float(1.0 - lr * options_.weight_decay);
  s.grad_scale = grad_scale;
  std::vector<ops::AdamWTensor> tensors;
  for (size_t i = 0; i < params_.size(); ++i)
    tensors.push_back(
        {params_[i].param, params_[i].grad, &m_[i], &v_[i], params_[i].weight_decay, params_[i].shadow});
  ops::adamw_update(tensors, s);
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(params_[i].name + ".exp_avg", m_[i].to_device(Device::CPU));
    out.emplace_back(params_[i].name + ".exp_avg_sq", v_[i].to_device(Device::CPU));
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
  return std::sqrt(ops::sum_of_squares(std::vector<const Tensor*>(grads.begin(), grads.end())));
}

float clip_factor(double norm, double max_norm) {
  return max_norm > 0 && std::isfinite(norm) && norm > max_norm ? float(max_norm / (norm + 1e-6)) : 1.0f;
}

void zero_grads(const std::vector<Tensor*>& grads) {
  for (Tensor* g : grads) zero_bytes(g->raw(), g->device(), g->nbytes());
}

}  // namespace ssm
