// The recurrent state of the Mamba mixers: the last K-1 inputs of the causal conv and the SSM state,
// plus A = -exp(A_log) as it was when the state was made, which every decode step reads (computing
// it per token cost Mamba-1 590K exps, ~2% of a token; the weights do not change while decoding).
#pragma once
#include <utility>

#include "nn/mixer.h"

namespace ssm {

class ConvSsmState final : public MixerState {
 public:
  // States in F32 on the device of A (the mixer's parameters).
  ConvSsmState(const Shape& conv_shape, const Shape& ssm_shape, Tensor A)
      : ConvSsmState(Tensor::zeros(conv_shape, DType::F32, A.device()), Tensor::zeros(ssm_shape, DType::F32, A.device()),
                     Tensor(A)) {}  // (a copy: arguments are evaluated in any order, A.device() may come last)
  ConvSsmState(Tensor conv, Tensor ssm, Tensor A)
      : conv(std::move(conv)), ssm(std::move(ssm)), A(std::move(A)), conv_storage_(this->conv), ssm_storage_(this->ssm) {}
  void copy_sequence(int64_t from, MixerState& to, int64_t to_index) const override;
  bool sequence_copies(int64_t from, MixerState& to, int64_t to_index, std::vector<ByteCopy>& copies) const override;
  int64_t bytes() const override { return int64_t(conv_storage_.nbytes() + ssm_storage_.nbytes()); }
  bool resizable() const override { return true; }
  void resize(int64_t batch) override;
  StateTensors export_sequence(int64_t index) const override;
  void import_sequence(int64_t index, const StateTensorMap& tensors) override;
  // On the GPU a fresh state is 2 allocations, 2 zeroings and A's kernel a layer (~0.38 ms of host
  // time at mamba2-130m); this one, 2 allocations.
  std::unique_ptr<MixerState> unset_like(int64_t batch) const override;

  Tensor conv;  // [B, K-1, conv channels]
  Tensor ssm;   // Mamba-1: [B, d_inner, N]; Mamba-2: [B, H, P, N]
  Tensor A;     // -exp(A_log): Mamba-1 [d_inner, N], Mamba-2 [H]; not part of bytes() (not per sequence)

 private:
  Tensor conv_storage_, ssm_storage_;  // conv and ssm are their first B rows
};

// The state a mixer made, as its own type (an error if the model paired it with another mixer's).
template <class State>
State& state_as(MixerState* state, const char* mixer) {
  auto* typed = dynamic_cast<State*>(state);
  SSM_CHECK(typed, "{}: missing or foreign recurrent state", mixer);
  return *typed;
}

// -exp(A_log) for ConvSsmState::A (undefined while the parameters are not allocated).
Tensor decode_A(const Tensor& A_log);

// Copies row `from` of a [B, ...] tensor into row `to_index` of another (any devices), and that copy
// as bytes (checked the same way; for copy_many, both tensors on one device).
void copy_batch_row(const Tensor& from, int64_t from_index, const Tensor& to, int64_t to_index);
ByteCopy batch_row_copy(const Tensor& from, int64_t from_index, const Tensor& to, int64_t to_index);
// Makes `rows` (the first rows of `storage`, a [capacity, ...] tensor) its first `batch` rows, first
// growing storage at least twofold, rows kept, when it has fewer than `batch`; it never shrinks.
void resize_batch_rows(Tensor& storage, Tensor& rows, int64_t batch);
// Row `index` of a [B, ...] tensor as a host copy [...], and `name` of `tensors` into that row (checked).
Tensor export_row(const Tensor& batch, int64_t index);
void import_row(const StateTensorMap& tensors, const std::string& name, const Tensor& batch, int64_t index,
                const char* owner);

}  // namespace ssm
