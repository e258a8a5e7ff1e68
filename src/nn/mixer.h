// The mixer interface: every sequence mixer offers the same faces (ARCHITECTURE.md): a parallel
// `forward` for prefill and training, a one-token `step` on an explicit state, and (in train/) a
// backward. A mixer maps normalised hidden states [B,T,D] to [B,T,D].
#pragma once
#include <memory>
#include <string>

#include "model/config.h"
#include "nn/parameter.h"

namespace ssm {

// Recurrent state of one mixer layer for a batch of sequences.
struct LayerState {
  Tensor conv;  // [B, K-1, conv channels]
  Tensor ssm;   // Mamba-1: [B, d_inner, N]; Mamba-2: [B, H, P, N]
};

class Mixer {
 public:
  virtual ~Mixer() = default;
  // x [B,T,D] → y [B,T,D]. state (optional) is the starting state and receives the final one.
  virtual void forward(const Tensor& x, LayerState* state, Tensor& y) const = 0;
  // x [B,D] → y [B,D], advancing state by one token.
  virtual void step(const Tensor& x, LayerState& state, Tensor& y) const = 0;
  virtual LayerState new_state(int64_t batch) const = 0;
  // Parameters with names under `prefix` (e.g. "backbone.layers.0.mixer").
  virtual void add_params(const std::string& prefix, ParamList& params) = 0;
};

std::unique_ptr<Mixer> make_mixer(const ModelConfig& config);

}  // namespace ssm
