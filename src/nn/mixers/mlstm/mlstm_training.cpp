// The mLSTM's training face: the forward keeps the projections (gates before and after their soft
// cap), the mLSTM output before and after the per-head norm and the gated product (out_proj's
// input); ops::mlstm_backward recomputes the recurrent states itself.
#include "nn/mixers/mlstm/mlstm.h"
#include "ops/ops_backward.h"

namespace ssm {

namespace {

class MlstmTraining final : public MixerTraining {
 public:
  explicit MlstmTraining(const MlstmMixer& mixer) : m_(mixer) {}

  void forward(const Tensor& x, Tensor& y, Workspace& ws, StepProfile* prof) override {
    const MlstmSettings& s = m_.s;
    x_ = x;
    {
      Timed t(prof, &StepProfile::matmul);
      p_ = m_.project(x, ws);
    }
    h_ = ws.take(with_last(x.shape(), s.v_dim));
    normed_ = ws.take(h_.shape(), x.dtype());
    gated_ = ws.take(h_.shape(), x.dtype());
    {
      Timed t(prof, &StepProfile::mixing);
      ops::mlstm(p_.in, nullptr, h_);
    }
    Timed t(prof, &StepProfile::other);
    m_.finish(h_, p_.o, normed_, gated_, y);
  }

  void backward(const Tensor& dy, Tensor& dx, Gradients& g, Workspace& ws, StepProfile* prof) override {
    WorkspaceScope scope(ws);
    const MlstmSettings& s = m_.s;
    const auto take = [&](const Tensor& like) { return ws.take(like.shape(), like.dtype()); };
    Tensor dgated = take(gated_), dnormed = take(normed_), dh = take(h_), dout = take(p_.o);
    {
      Timed t(prof, &StepProfile::matmul);
      ops::linear_backward(gated_, m_.out_proj.weight, dy, &dgated, &g.of(m_.out_proj.weight), nullptr);
    }
    {
      Timed t(prof, &StepProfile::other);
      ops::gated_activation_backward(ops::Activation::Sigmoid, p_.o, normed_, 1.0f, dgated, &dout, &dnormed);
      ops::group_layernorm_backward(h_, m_.norm_weight, s.v_head_dim(), float(s.norm_eps), dnormed, dh,
                                    &g.of(m_.norm_weight), nullptr);
    }
    ops::MlstmGrads grads{take(p_.in.q), take(p_.in.k), take(p_.in.v), take(p_.i_raw), take(p_.f_raw)};
    {
      Timed t(prof, &StepProfile::mixing);
      ops::mlstm_backward(p_.in, dh, grads);
    }
    if (s.gate_soft_cap > 0) {
      Timed t(prof, &StepProfile::other);
      ops::soft_cap_backward(p_.i_raw, float(s.gate_soft_cap), grads.di, grads.di);
      ops::soft_cap_backward(p_.f_raw, float(s.gate_soft_cap), grads.df, grads.df);
    }
    Timed t(prof, &StepProfile::matmul);
    // The gates' gradients are F32 in either mode; a product takes x's dtype.
    for (Tensor* dgate : {&grads.di, &grads.df})
      if (dgate->dtype() != x_.dtype()) {
        Tensor converted = ws.take(dgate->shape(), x_.dtype());
        ops::convert(*dgate, converted);
        *dgate = converted;
      }
    bool accumulate = false;
    for (auto [proj, dproj] : {std::pair{&m_.query, &grads.dq}, {&m_.key, &grads.dk}, {&m_.value, &grads.dv},
                               {&m_.ogate, &dout}, {&m_.igate, &grads.di}, {&m_.fgate, &grads.df}}) {
      ops::linear_backward(x_, proj->weight, *dproj, &dx, &g.of(proj->weight), g.of_optional(proj->bias), accumulate);
      accumulate = true;
    }
  }

 private:
  const MlstmMixer& m_;
  Tensor x_, h_, normed_, gated_;
  MlstmMixer::Projected p_;
};

}  // namespace

std::unique_ptr<MixerTraining> MlstmMixer::training() const { return std::make_unique<MlstmTraining>(*this); }

}  // namespace ssm
