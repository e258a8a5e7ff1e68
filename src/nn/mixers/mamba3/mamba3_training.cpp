// Mamba-3's training face: the forward keeps in_proj's output, B and C before and after their norms,
// the recurrence's output and the gated product (out_proj's input); ops::mamba3_backward recomputes
// the recurrent states itself.
#include <tuple>

#include "nn/mixers/mamba3/mamba3.h"
#include "ops/ops_backward.h"

namespace ssm {

namespace {

constexpr float kNormEps = Mamba3Mixer::kNormEps;

class Mamba3Training final : public MixerTraining {
 public:
  explicit Mamba3Training(const Mamba3Mixer& mixer) : m_(mixer) {}

  void forward(const Tensor& x, Tensor& out, Workspace& ws, StepProfile* prof) override {
    x_ = x;
    {
      Timed t(prof, &StepProfile::matmul);
      p_ = m_.project(x, ws);
    }
    y_ = ws.take(with_last(x.shape(), m_.s.d_inner));
    gated_ = ws.take(y_.shape());
    {
      Timed t(prof, &StepProfile::mixing);
      ops::mamba3(p_.in, nullptr, y_);
    }
    Timed t(prof, &StepProfile::matmul);
    m_.finish(y_, p_.z, gated_, out);
  }

  void backward(const Tensor& dout, Tensor& dx, Gradients& g, Workspace& ws, StepProfile* prof) override {
    WorkspaceScope scope(ws);
    const Mamba3Settings& s = m_.s;
    const int64_t axis = dout.dim() - 1, Di = s.d_inner, GN = s.n_groups * s.d_state, H = s.n_heads;
    Tensor dgated = ws.take(gated_.shape()), dy = ws.take(y_.shape()), dproj = ws.take(p_.proj.shape());
    {
      Timed t(prof, &StepProfile::matmul);
      ops::linear_backward(gated_, m_.out_proj.weight, dout, &dgated, &g.of(m_.out_proj.weight), nullptr);
    }
    int64_t column = 0;
    const auto part = [&](int64_t width) {
      Tensor t = dproj.slice(axis, column, width);
      column += width;
      return t;
    };
    Tensor dz = part(Di);
    ops::Mamba3Grads grads;
    grads.dx = part(Di);
    Tensor dB_raw = part(GN), dC_raw = part(GN);
    grads.ddt = part(H);
    grads.dA = part(H);
    grads.dtrap = part(H);
    grads.dangles = part(s.n_angles);
    {
      Timed t(prof, &StepProfile::other);
      if (s.outproj_norm)
        ops::gated_rmsnorm_backward(y_, p_.z, m_.norm_weight, s.head_dim, true, kNormEps, dgated, dy, &dz,
                                    &g.of(m_.norm_weight));
      else ops::gated_activation_backward(ops::Activation::Silu, p_.z, y_, 1.0f, dgated, &dz, &dy);
    }
    grads.dB = ws.take(p_.B_raw.shape());
    grads.dC = ws.take(p_.C_raw.shape());
    grads.ddt_bias = g.of(m_.dt_bias);
    grads.dB_bias = g.of(m_.B_bias).view({H, s.d_state});
    grads.dC_bias = g.of(m_.C_bias).view({H, s.d_state});
    grads.dD = g.of(m_.D);
    {
      Timed t(prof, &StepProfile::mixing);
      ops::mamba3_backward(p_.in, dy, grads);
    }
    {
      Timed t(prof, &StepProfile::other);
      for (auto [raw, dnormed, weight, target] :
           {std::tuple{&p_.B_raw, &grads.dB, &m_.B_norm_weight, &dB_raw},
            std::tuple{&p_.C_raw, &grads.dC, &m_.C_norm_weight, &dC_raw}}) {
        Tensor draw = ws.take(raw->shape());
        Tensor draw_rows = m_.group_rows(draw);
        ops::rmsnorm_backward(m_.group_rows(*raw), *weight, kNormEps, m_.group_rows(*dnormed), draw_rows,
                              &g.of(*weight));
        target->copy_from(draw);
      }
    }
    Timed t(prof, &StepProfile::matmul);
    ops::linear_backward(x_, m_.in_proj.weight, dproj, &dx, &g.of(m_.in_proj.weight), nullptr);
  }

 private:
  const Mamba3Mixer& m_;
  Tensor x_, y_, gated_;
  Mamba3Mixer::Projected p_;
};

}  // namespace

std::unique_ptr<MixerTraining> Mamba3Mixer::training() const { return std::make_unique<Mamba3Training>(*this); }

}  // namespace ssm
