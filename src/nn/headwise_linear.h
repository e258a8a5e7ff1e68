// A block-diagonal linear layer, NX-AI's LinearHeadwiseExpand without bias and expansion (the sLSTM's
// gate projections): x's width is split into H heads of dh channels and head h maps its own channels,
//   y[..., h·dh + o] = Σ_d x[..., h·dh + d] · weight[h, o, d],   weight [H, dh, dh].
// Each head is one ops::linear on column slices of the rows tensors x and y.
#pragma once
#include <string>

#include "nn/parameter.h"

namespace ssm {

struct HeadwiseLinear {
  Tensor weight;  // [H, dh, dh], F32, BF16 or F16 (F32 in training)
  int64_t heads = 0, head_dim = 0;

  HeadwiseLinear() = default;
  HeadwiseLinear(int64_t n_heads, int64_t dh) : heads(n_heads), head_dim(dh) {}

  void add_params(const std::string& prefix, ParamList& params) {
    params.push_back({prefix + ".weight", {heads, head_dim, head_dim}, &weight, ParamKind::Matrix, true});
  }
  // y = x Wᵀ per head; x, y rows [..., H·dh].
  void forward(const Tensor& x, Tensor& y) const;
  // dx (=|+= with accumulate_dx) the input gradient; dweight [H, dh, dh] F32 += .
  void backward(const Tensor& x, const Tensor& dy, Tensor& dx, Tensor& dweight, bool accumulate_dx) const;
};

}  // namespace ssm
