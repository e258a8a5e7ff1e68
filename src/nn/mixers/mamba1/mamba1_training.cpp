// Mamba-1's training face: the forward saves the projections' inputs and outputs and the scan's
// chunk-boundary states; the backward recomputes the scan inside each chunk from them.
#include "nn/mixers/mamba1/mamba1.h"
#include "ops/ops_backward.h"

namespace ssm {

namespace {

// The saved-state / recompute chunk of the selective scan's backward.
constexpr int64_t kScanChunk = 64;

class Mamba1Training final : public MixerTraining {
 public:
  explicit Mamba1Training(const Mamba1Mixer& mixer) : m_(mixer) {}

  void forward(const Tensor& x, Tensor& out, Workspace& ws, StepProfile* prof) override {
    const Mamba1Settings& s = m_.s;
    const int64_t Bt = x.size(0), T = x.size(1), Di = s.d_inner;
    x_ = x;
    xz_ = ws.take({Bt, T, 2 * Di}, x.dtype());
    u_ = ws.take({Bt, T, Di}, x.dtype());
    x_dbl_raw_ = ws.take({Bt, T, m_.x_proj.out}, x.dtype());
    x_dbl_ = s.dt_bc_norms ? ws.take({Bt, T, m_.x_proj.out}, x.dtype()) : x_dbl_raw_;
    delta_ = ws.take({Bt, T, Di}, x.dtype());
    y_ = ws.take({Bt, T, Di}, x.dtype());
    A_ = m_.A(ws);
    chunk_states_ = ws.take({Bt, ops::selective_scan_chunk_count(T, kScanChunk), Di, s.d_state});
    {
      Timed t(prof, &StepProfile::matmul);
      m_.in_proj.forward(x, xz_);
    }
    {
      Timed t(prof, &StepProfile::conv);
      ops::conv1d_causal(xz_.slice(2, 0, Di), m_.conv_taps(), m_.conv_bias, true, nullptr, u_);
    }
    {
      Timed t(prof, &StepProfile::matmul);
      m_.x_proj.forward(u_, x_dbl_raw_);
    }
    if (s.dt_bc_norms) {
      Timed t(prof, &StepProfile::other);
      x_dbl_.copy_from(x_dbl_raw_);
      m_.normalise_dt_bc(x_dbl_);
    }
    ops::SelectiveScanInputs in;
    {
      Timed t(prof, &StepProfile::matmul);
      in = m_.scan_inputs(xz_, u_, x_dbl_, delta_, A_);
    }
    {
      Timed t(prof, &StepProfile::mixing);
      ops::selective_scan_forward_saving_chunk_states(in, Tensor(), kScanChunk, y_, chunk_states_);
    }
    Timed t(prof, &StepProfile::matmul);
    m_.out_proj.forward(y_, out);
  }

  void backward(const Tensor& dout, Tensor& dx, Gradients& g, Workspace& ws, StepProfile* prof) override {
    WorkspaceScope scope(ws);
    const Mamba1Settings& s = m_.s;
    const int64_t Bt = dout.size(0), T = dout.size(1), Di = s.d_inner, R = s.dt_rank, N = s.d_state;
    Tensor dy = ws.take({Bt, T, Di}, dout.dtype());
    {
      Timed t(prof, &StepProfile::matmul);
      ops::linear_backward(y_, m_.out_proj.weight, dout, &dy, &g.of(m_.out_proj.weight),
                           g.of_optional(m_.out_proj.bias));
    }
    Tensor dxz = ws.take({Bt, T, 2 * Di}, dout.dtype());
    Tensor dx_dbl = ws.take({Bt, T, m_.x_proj.out}, dout.dtype());
    Tensor du = ws.take({Bt, T, Di}, dout.dtype());
    Tensor ddelta = ws.take({Bt, T, Di}, dout.dtype());
    Tensor dA = ws.zeros({Di, N});
    ops::SelectiveScanInputs in;
    in.u = u_;
    in.delta = delta_;
    in.delta_bias = m_.dt_proj.bias;
    in.A = A_;
    in.B = x_dbl_.slice(2, R, N);
    in.C = x_dbl_.slice(2, R + N, N);
    in.D = m_.D;
    in.z = xz_.slice(2, Di, Di);
    ops::SelectiveScanGrads sg;
    sg.du = du;
    sg.ddelta = ddelta;
    sg.dA = dA;
    sg.dB = dx_dbl.slice(2, R, N);
    sg.dC = dx_dbl.slice(2, R + N, N);
    sg.dD = g.of(m_.D);
    sg.dz = dxz.slice(2, Di, Di);
    sg.ddelta_bias = g.of(m_.dt_proj.bias);
    {
      Timed t(prof, &StepProfile::mixing);
      ops::selective_scan_backward(in, Tensor(), chunk_states_, kScanChunk, dy, sg);
    }
    ops::add_product_inplace(g.of(m_.A_log), dA, A_);  // dA_log = dA ⊙ A (A = -exp(A_log))
    {
      Timed t(prof, &StepProfile::matmul);
      Tensor ddt_in = dx_dbl.slice(2, 0, R);
      ops::linear_backward(x_dbl_.slice(2, 0, R), m_.dt_proj.weight, ddelta, &ddt_in, &g.of(m_.dt_proj.weight),
                           nullptr);
    }
    if (s.dt_bc_norms) {
      Timed t(prof, &StepProfile::other);
      const float eps = float(s.norm_eps);
      const std::pair<int64_t, const Tensor*> parts[] = {{0, &m_.dt_norm}, {R, &m_.b_norm}, {R + N, &m_.c_norm}};
      for (const auto& [offset, weight] : parts) {
        const int64_t width = weight->size(0);
        Tensor d_normed = dx_dbl.slice(2, offset, width);
        Tensor d_raw = ws.take({Bt, T, width}, dout.dtype());
        ops::rmsnorm_backward(x_dbl_raw_.slice(2, offset, width), *weight, eps, d_normed, d_raw, &g.of(*weight));
        d_normed.copy_from(d_raw);
      }
    }
    {
      Timed t(prof, &StepProfile::matmul);
      ops::linear_backward(u_, m_.x_proj.weight, dx_dbl, &du, &g.of(m_.x_proj.weight), nullptr,
                           /*accumulate_dx=*/true);
    }
    {
      Timed t(prof, &StepProfile::conv);
      Tensor dxin = dxz.slice(2, 0, Di);
      Tensor gw = g.of(m_.conv_weight).view({Di, s.d_conv});
      ops::conv1d_causal_backward(xz_.slice(2, 0, Di), m_.conv_taps(), m_.conv_bias, true, Tensor(), du, dxin, &gw,
                                  g.of_optional(m_.conv_bias));
    }
    Timed t(prof, &StepProfile::matmul);
    ops::linear_backward(x_, m_.in_proj.weight, dxz, &dx, &g.of(m_.in_proj.weight), g.of_optional(m_.in_proj.bias));
  }

 private:
  const Mamba1Mixer& m_;
  Tensor x_, xz_, u_, x_dbl_raw_, x_dbl_, delta_, y_, A_, chunk_states_;
};

}  // namespace

std::unique_ptr<MixerTraining> Mamba1Mixer::training() const { return std::make_unique<Mamba1Training>(*this); }

}  // namespace ssm
