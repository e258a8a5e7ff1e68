// The sLSTM's training face: the forward keeps x, the convolved input xc, the gate inputs wx, the
// cell output h and the norm's scale; ops::slstm_backward recomputes the recurrent states itself.
#include "nn/mixers/slstm/slstm.h"
#include "ops/ops_backward.h"

namespace ssm {

namespace {

class SlstmTraining final : public MixerTraining {
 public:
  explicit SlstmTraining(const SlstmMixer& mixer) : m_(mixer) {}

  void forward(const Tensor& x, Tensor& y, Workspace& ws, StepProfile* prof) override {
    const SlstmSettings& s = m_.s;
    x_ = x;
    xc_ = x;
    if (m_.has_conv()) {
      Timed t(prof, &StepProfile::conv);
      xc_ = ws.take(x.shape(), x.dtype());
      ops::conv1d_causal(x, m_.conv_taps(), m_.conv_bias, true, nullptr, xc_);
    }
    wx_ = ws.take(with_last(x.shape(), 4 * s.d_model));
    h_ = ws.take(x.shape());
    {
      Timed t(prof, &StepProfile::matmul);
      m_.project(x, xc_, wx_);
    }
    {
      Timed t(prof, &StepProfile::mixing);
      ops::slstm(m_.cell_inputs(wx_), nullptr, h_);
    }
    Timed t(prof, &StepProfile::other);
    scale_ = m_.norm_scale(ws);
    ops::group_layernorm(h_, scale_, Tensor(), s.head_dim(), float(SlstmSettings::kNormEps), y);
  }

  void backward(const Tensor& dy, Tensor& dx, Gradients& g, Workspace& ws, StepProfile* prof) override {
    WorkspaceScope scope(ws);
    const SlstmSettings& s = m_.s;
    const int64_t D = s.d_model;
    Tensor dh = ws.take(h_.shape()), dwx = ws.take(wx_.shape());
    {
      Timed t(prof, &StepProfile::other);
      // d(1 + w) = dw: the scale's gradient is the weight's.
      ops::group_layernorm_backward(h_, scale_, s.head_dim(), float(SlstmSettings::kNormEps), dy, dh,
                                    &g.of(m_.norm_weight), nullptr);
    }
    {
      Timed t(prof, &StepProfile::mixing);
      ops::SlstmGrads grads{dwx, g.of(m_.recurrent_kernel), g.of(m_.bias)};
      ops::slstm_backward(m_.cell_inputs(wx_), dh, grads);
    }
    // dwx is F32 in either mode; the products take x's dtype.
    Tensor dwx_x = dwx;
    if (x_.dtype() != dwx.dtype()) {
      dwx_x = ws.take(dwx.shape(), x_.dtype());
      ops::convert(dwx, dwx_x);
    }
    const auto gate = [&](int64_t i) { return dwx_x.slice(-1, i * D, D); };
    Tensor dxc = m_.has_conv() ? ws.take(x_.shape(), x_.dtype()) : dx;
    {
      Timed t(prof, &StepProfile::matmul);
      m_.zgate.backward(x_, gate(2), dx, g.of(m_.zgate.weight), false);
      m_.ogate.backward(x_, gate(3), dx, g.of(m_.ogate.weight), true);
      m_.fgate.backward(xc_, gate(0), dxc, g.of(m_.fgate.weight), !m_.has_conv());
      m_.igate.backward(xc_, gate(1), dxc, g.of(m_.igate.weight), true);
    }
    if (!m_.has_conv()) return;
    Timed t(prof, &StepProfile::conv);
    Tensor dx_conv = ws.take(x_.shape(), x_.dtype());
    Tensor dw = g.of(m_.conv_weight).view({D, s.conv_kernel});
    ops::conv1d_causal_backward(x_, m_.conv_taps(), m_.conv_bias, true, Tensor(), dxc, dx_conv, &dw,
                                &g.of(m_.conv_bias));
    ops::add_inplace(dx, dx_conv);
  }

 private:
  const SlstmMixer& m_;
  Tensor x_, xc_, wx_, h_, scale_;
};

}  // namespace

std::unique_ptr<MixerTraining> SlstmMixer::training() const { return std::make_unique<SlstmTraining>(*this); }

}  // namespace ssm
