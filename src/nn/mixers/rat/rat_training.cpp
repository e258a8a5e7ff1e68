// RAT's training face: the forward saves in_proj's output, the RAT output before the σ(z) gate and
// the gated product (out_proj's input); ops::rat_backward recomputes the in-chunk states and the
// attention over chunk ends itself.
#include "nn/mixers/rat/rat.h"
#include "ops/ops_backward.h"

namespace ssm {

namespace {

class RatTraining final : public MixerTraining {
 public:
  explicit RatTraining(const RatMixer& mixer) : m_(mixer) {}

  void forward(const Tensor& x, Tensor& y, Workspace& ws, StepProfile* prof) override {
    const RatSettings& s = m_.s;
    const int64_t B = x.size(0), T = x.size(1);
    x_ = x;
    projected_ = ws.take({B, T, s.in_proj_width()}, x.dtype());
    mixed_ = ws.take({B, T, s.width()}, x.dtype());
    gated_ = ws.take({B, T, s.width()}, x.dtype());
    {
      Timed t(prof, &StepProfile::matmul);
      m_.in_proj.forward(x, projected_);
    }
    {
      Timed t(prof, &StepProfile::mixing);
      ops::rat(m_.rat_inputs(projected_), nullptr, mixed_);
    }
    {
      Timed t(prof, &StepProfile::other);
      ops::gated_activation(ops::Activation::Sigmoid, m_.z_of(projected_), mixed_, 1.0f, gated_);
    }
    Timed t(prof, &StepProfile::matmul);
    m_.out_proj.forward(gated_, y);
  }

  void backward(const Tensor& dy, Tensor& dx, Gradients& g, Workspace& ws, StepProfile* prof) override {
    WorkspaceScope scope(ws);
    Tensor dgated = ws.take(gated_.shape(), gated_.dtype());
    {
      Timed t(prof, &StepProfile::matmul);
      ops::linear_backward(gated_, m_.out_proj.weight, dy, &dgated, &g.of(m_.out_proj.weight), nullptr);
    }
    Tensor dprojected = ws.take(projected_.shape(), projected_.dtype());
    Tensor dmixed = ws.take(mixed_.shape(), mixed_.dtype());
    {
      Timed t(prof, &StepProfile::other);
      Tensor dz = m_.z_of(dprojected);
      ops::gated_activation_backward(ops::Activation::Sigmoid, m_.z_of(projected_), mixed_, 1.0f, dgated, &dz,
                                     &dmixed);
    }
    {
      Timed t(prof, &StepProfile::mixing);
      ops::RatGrads grads;
      const ops::RatInputs slots = m_.rat_inputs(dprojected);  // the gradients' columns, as the inputs'
      grads.dq = slots.q;
      grads.dk = slots.k;
      grads.dv = slots.v;
      grads.dg = slots.g;
      grads.dgate_bias = g.of(m_.gate_bias);
      ops::rat_backward(m_.rat_inputs(projected_), dmixed, grads);
    }
    Timed t(prof, &StepProfile::matmul);
    ops::linear_backward(x_, m_.in_proj.weight, dprojected, &dx, &g.of(m_.in_proj.weight), nullptr);
  }

 private:
  const RatMixer& m_;
  Tensor x_, projected_, mixed_, gated_;
};

}  // namespace

std::unique_ptr<MixerTraining> RatMixer::training() const { return std::make_unique<RatTraining>(*this); }

}  // namespace ssm
