// The recurrent state of the Mamba mixers: the last K-1 inputs of the causal conv and the SSM state.
#pragma once
#include "nn/mixer.h"

namespace ssm {

class ConvSsmState final : public MixerState {
 public:
  ConvSsmState(const Shape& conv_shape, const Shape& ssm_shape)
      : conv(Tensor::zeros(conv_shape)), ssm(Tensor::zeros(ssm_shape)) {}
  void copy_sequence(int64_t from, MixerState& to, int64_t to_index) const override;
  int64_t bytes() const override { return int64_t(conv.nbytes() + ssm.nbytes()); }

  Tensor conv;  // [B, K-1, conv channels]
  Tensor ssm;   // Mamba-1: [B, d_inner, N]; Mamba-2: [B, H, P, N]
};

// The state a mixer made, as its own type (an error if the model paired it with another mixer's).
template <class State>
State& state_as(MixerState* state, const char* mixer) {
  auto* typed = dynamic_cast<State*>(state);
  SSM_CHECK(typed, "{}: missing or foreign recurrent state", mixer);
  return *typed;
}

// Copies row `from` of a [B, ...] tensor into row `to_index` of another.
void copy_batch_row(const Tensor& from, int64_t from_index, const Tensor& to, int64_t to_index);

}  // namespace ssm
