// Mamba-3's training face: the forward keeps in_proj's output, B and C before and after their norms,
// the recurrence's output, the gated product and out_proj's input (MIMO: the ranks' x_r and z_r too,
// and the merged ranks); ops::mamba3_backward recomputes the recurrent states itself.
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
    y_ = ws.take(p_.in.x.shape(), x.dtype());
    gated_ = ws.take(y_.shape(), x.dtype());
    {
      Timed t(prof, &StepProfile::mixing);
      ops::mamba3(p_.in, nullptr, y_);
    }
    Timed t(prof, &StepProfile::matmul);
    merged_ = m_.finish(y_, p_.z_gate, gated_, out, ws);
  }

  void backward(const Tensor& dout, Tensor& dx, Gradients& g, Workspace& ws, StepProfile* prof) override {
    WorkspaceScope scope(ws);
    const Mamba3Settings& s = m_.s;
    const int64_t axis = dout.dim() - 1, Di = s.d_inner, GN = s.mimo_rank * s.n_groups * s.d_state, H = s.n_heads;
    const DType act = dout.dtype();  // the activations' gradients (BF16 under mixed precision on the GPU)
    Tensor dgated = ws.take(gated_.shape(), act), dy = ws.take(y_.shape(), act), dproj = ws.take(p_.proj.shape(), act);
    {
      Timed t(prof, &StepProfile::matmul);
      Tensor dmerged = s.mimo ? ws.take(merged_.shape(), act) : dgated;
      ops::linear_backward(merged_, m_.out_proj.weight, dout, &dmerged, &g.of(m_.out_proj.weight), nullptr);
      if (s.mimo) {
        ops::mamba3_mimo_expand(dmerged, m_.mimo_o, dgated);
        ops::mamba3_mimo_weight_grad(gated_, dmerged, g.of(m_.mimo_o));
      }
    }
    int64_t column = 0;
    const auto part = [&](int64_t width) {
      Tensor t = dproj.slice(axis, column, width);
      column += width;
      return t;
    };
    Tensor dz = part(Di);
    Tensor dx_in = part(Di);
    // MIMO: the gradients of the ranks' z_r and x_r first, then down to z and x.
    Tensor dz_gate = s.mimo ? ws.take(p_.z_gate.shape(), act) : dz;
    ops::Mamba3Grads grads;
    grads.dx = s.mimo ? ws.take(p_.in.x.shape(), act) : dx_in;
    Tensor dB_raw = part(GN), dC_raw = part(GN);
    grads.ddt = part(H);
    grads.dA = part(H);
    grads.dtrap = part(H);
    grads.dangles = part(s.n_angles);
    {
      Timed t(prof, &StepProfile::other);
      if (s.outproj_norm) {
        const auto rows = [&](const Tensor& t) { return s.mimo ? m_.rank_rows(t) : t; };
        Tensor dy_rows = rows(dy), dz_rows = rows(dz_gate);
        ops::gated_rmsnorm_backward(rows(y_), rows(p_.z_gate), m_.norm_weight, s.head_dim, true, kNormEps,
                                    rows(dgated), dy_rows, &dz_rows, &g.of(m_.norm_weight));
      } else {
        ops::gated_activation_backward(ops::Activation::Silu, p_.z_gate, y_, 1.0f, dgated, &dz_gate, &dy);
      }
      if (s.mimo) {
        ops::mamba3_mimo_contract(dz_gate, m_.mimo_z, dz);
        ops::mamba3_mimo_weight_grad(dz_gate, p_.z, g.of(m_.mimo_z));
      }
    }
    grads.dB = ws.take(p_.B_raw.shape(), act);
    grads.dC = ws.take(p_.C_raw.shape(), act);
    grads.ddt_bias = g.of(m_.dt_bias);
    grads.dB_bias = g.of(m_.B_bias).view({H, s.mimo_rank * s.d_state});
    grads.dC_bias = g.of(m_.C_bias).view({H, s.mimo_rank * s.d_state});
    grads.dD = g.of(m_.D);
    {
      Timed t(prof, &StepProfile::mixing);
      ops::mamba3_backward(p_.in, dy, grads);
    }
    if (s.mimo) {
      Timed t(prof, &StepProfile::other);
      ops::mamba3_mimo_contract(grads.dx, m_.mimo_x, dx_in);
      ops::mamba3_mimo_weight_grad(grads.dx, p_.x, g.of(m_.mimo_x));
    }
    {
      Timed t(prof, &StepProfile::other);
      for (auto [raw, dnormed, weight, target] :
           {std::tuple{&p_.B_raw, &grads.dB, &m_.B_norm_weight, &dB_raw},
            std::tuple{&p_.C_raw, &grads.dC, &m_.C_norm_weight, &dC_raw}}) {
        Tensor draw = ws.take(raw->shape(), act);
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
  Tensor x_, y_, gated_, merged_;
  Mamba3Mixer::Projected p_;
};

}  // namespace

std::unique_ptr<MixerTraining> Mamba3Mixer::training() const { return std::make_unique<Mamba3Training>(*this); }

}  // namespace ssm
