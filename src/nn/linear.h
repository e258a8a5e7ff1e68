// Linear layer y = x Wᵀ + b with W [out, in] as stored by PyTorch.
#pragma once
#include <string>

#include "nn/parameter.h"
#include "ops/ops.h"

namespace ssm {

struct Linear {
  Tensor weight;  // [out, in], F32, BF16 or F16
  Tensor bias;    // [out] or undefined
  int64_t in = 0, out = 0;
  bool has_bias = false;

  Linear() = default;
  Linear(int64_t in_features, int64_t out_features, bool with_bias)
      : in(in_features), out(out_features), has_bias(with_bias) {}

  void forward(const Tensor& x, Tensor& y) const { ops::linear(x, weight, bias, y); }
  void add_params(const std::string& prefix, ParamList& params) {
    params.push_back({prefix + ".weight", {out, in}, &weight, ParamKind::Matrix, true});
    if (has_bias) params.push_back({prefix + ".bias", {out}, &bias, ParamKind::Vector, false});
  }
};

}  // namespace ssm
