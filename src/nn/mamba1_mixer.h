// Mamba-1 mixer (mamba_ssm mamba_simple.py / transformers MambaMixer).
#pragma once
#include "nn/linear.h"
#include "nn/mixer.h"

namespace ssm {

class Mamba1Mixer : public Mixer {
 public:
  explicit Mamba1Mixer(const ModelConfig& config);
  void forward(const Tensor& x, LayerState* state, Tensor& y) const override;
  void step(const Tensor& x, LayerState& state, Tensor& y) const override;
  LayerState new_state(int64_t batch) const override;
  void add_params(const std::string& prefix, ParamList& params) override;

  // Public for the training code, which reads and writes the same parameters.
  int64_t d_model, d_inner, d_state, d_conv, dt_rank;
  bool has_conv_bias;
  Linear in_proj, x_proj, dt_proj, out_proj;
  Tensor conv_weight;  // [d_inner, 1, K]
  Tensor conv_bias;    // [d_inner] or undefined
  Tensor A_log;        // [d_inner, N]
  Tensor D;            // [d_inner]

  Tensor A() const;    // -exp(A_log)
  // Scan inputs from in_proj's output xz, the conv output u and x_proj's output x_dbl (computes Δ).
  ops::SelectiveScanInputs scan_inputs(const Tensor& xz, const Tensor& u, const Tensor& x_dbl) const;
};

}  // namespace ssm
