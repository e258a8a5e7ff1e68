// The sLSTM layer of xLSTM (Beck et al. 2024) as NX-AI's xlstm package applies it (sLSTMLayer with
// the sLSTM cell; the block's pre-norm, residual and gated feed-forward are the model's branches):
//   xc = silu(conv1d(x))                          causal depthwise conv, kernel K (K = 0: xc = x)
//   wx = [fgate(xc), igate(xc), zgate(x), ogate(x)]   headwise (block-diagonal) projections, no bias;
//                                                 NX-AI feeds fgate's output to the cell's input gate
//                                                 and igate's to its forget gate, kept for its weights
//   h = slstm(wx; R, bias)                        ops::slstm, state (c, n, m, h) per unit
//   y = group_norm(h)                             LayerNorm per head, weight 1 + w (NX-AI's residual
//                                                 weight), no bias, eps 1e-5
// Tensor names under the prefix are NX-AI's (conv1d.conv.*, {f,i,z,o}gate.weight,
// slstm_cell._recurrent_kernel_ [H, dh, 4·dh] and slstm_cell._bias_ [H·4·dh] in its CUDA backend's
// layout, group_norm.weight).
#pragma once
#include <set>

#include "core/config_reader.h"
#include "nn/headwise_linear.h"
#include "nn/mixer.h"
#include "ops/ops.h"

namespace ssm {

struct SlstmSettings final : MixerSettings {
  int64_t d_model = 0, n_heads = 4;
  int64_t conv_kernel = 4;  // 0: no convolution
  std::string bias_init = "powerlaw_blockdependent";  // or small_init, standard, zeros
  std::string recurrent_weight_init = "zeros";        // or standard
  static constexpr double kNormEps = 1e-5;            // NX-AI's MultiHeadLayerNorm

  // Keys, as NX-AI's sLSTMLayerConfig names them: num_heads (4), conv1d_kernel_size (4),
  // bias_init ("powerlaw_blockdependent"), recurrent_weight_init ("zeros").
  static SlstmSettings from_config(const ConfigReader& r, int64_t d_model);
  static const std::set<std::string>& config_keys();

  int64_t head_dim() const { return d_model / n_heads; }
  std::string_view kind() const override { return "slstm"; }
  std::string describe() const override;
  std::unique_ptr<Mixer> build() const override;
  void validate(const std::string& source) const;
};

class SlstmState final : public MixerState {
 public:
  SlstmState(int64_t batch, const SlstmSettings& s, Device device);
  SlstmState(const SlstmState&) = delete;  // rows_ points into this object
  SlstmState& operator=(const SlstmState&) = delete;
  void copy_sequence(int64_t from, MixerState& to, int64_t to_index) const override;
  int64_t bytes() const override;
  bool resizable() const override { return true; }
  void resize(int64_t batch) override;
  StateTensors export_sequence(int64_t index) const override;
  void import_sequence(int64_t index, const StateTensorMap& tensors) override;

  Tensor conv;  // [B, K-1, D] (undefined without a convolution)
  ops::SlstmState cell;

 private:
  // conv, c, n, m, h (the names export_sequence gives them) and the storage whose first B rows they
  // are; a missing conv is left out.
  std::vector<const char*> names_;
  std::vector<Tensor*> rows_;
  std::vector<Tensor> storage_;
};

class SlstmMixer final : public Mixer {
 public:
  explicit SlstmMixer(const SlstmSettings& settings);
  void add_params(const std::string& prefix, ParamList& params) override;
  void init_parameters(Rng& rng, const InitOptions& options) override;
  std::unique_ptr<MixerState> new_state(int64_t batch) const override;
  void forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  void step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  bool replayable_step() const override { return true; }
  std::unique_ptr<MixerTraining> training() const override;
  double matmul_macs_per_token() const override;

  bool has_conv() const { return s.conv_kernel > 0; }
  Tensor conv_taps() const { return conv_weight.view({s.d_model, s.conv_kernel}); }
  // The four gate projections of x and xc into wx [..., 4·D] (gate-major, the cell's order).
  void project(const Tensor& x, const Tensor& xc, Tensor& wx) const;
  ops::SlstmInputs cell_inputs(const Tensor& wx) const;
  // 1 + group_norm.weight into a tensor from ws (the norm's effective weight).
  Tensor norm_scale(Workspace& ws) const;

  const SlstmSettings s;
  Tensor conv_weight, conv_bias;  // [D, 1, K], [D]
  HeadwiseLinear fgate, igate, zgate, ogate;
  Tensor recurrent_kernel;  // R [H, dh, 4·dh]
  Tensor bias;              // [H·4·dh]
  Tensor norm_weight;       // group_norm.weight [D] (the norm scales by 1 + it)
};

}  // namespace ssm
