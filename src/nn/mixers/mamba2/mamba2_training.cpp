// Mamba-2's training face: the forward saves the projections' inputs and outputs, and the states the
// SSD's backward would otherwise walk again where the device keeps them (the GPU: the state entering
// every 64-token chunk, ~30% of a layer's other saved activations). With `recompute` it keeps only
// in_proj's output and the SSD's (the conv's and the gated norm's outputs are made again in the
// backward from those) and no states: the SSD's backward walks them (the same values but for rounding,
// at less cost than a second forward would have).
#include "nn/mixers/mamba2/mamba2.h"
#include "ops/ops_backward.h"

namespace ssm {

namespace {

class Mamba2Training final : public MixerTraining {
 public:
  explicit Mamba2Training(const Mamba2Mixer& mixer) : m_(mixer) {}

  void forward(const Tensor& x, Tensor& out, Workspace& ws, StepProfile* prof) override {
    const Mamba2Settings& s = m_.s;
    const int64_t Bt = x.size(0), T = x.size(1), Di = s.d_inner;
    x_ = x;
    zxbcdt_ = ws.take({Bt, T, m_.in_proj.out}, x.dtype());
    y_ = ws.take({Bt, T, Di}, x.dtype());
    A_ = m_.A(ws);
    const Workspace::Mark kept = ws.mark();  // with recompute, what is taken above goes at the end
    {
      Timed t(prof, &StepProfile::matmul);
      m_.project_in(x, zxbcdt_);
    }
    conv(ws, prof);
    {
      Timed t(prof, &StepProfile::mixing);
      if (recompute) ops::ssd(ssd_inputs(), nullptr, y_);
      else chunk_states_ = ops::ssd_forward_saving_chunk_states(ssd_inputs(), y_);
    }
    gate(ws, prof);
    {
      Timed t(prof, &StepProfile::matmul);
      m_.out_proj.forward(gated_, out);
    }
    if (recompute) {
      xbc_ = gated_ = Tensor();
      ws.release(kept);
    }
  }

  void backward(const Tensor& dout, Tensor& dx, Gradients& g, Workspace& ws, StepProfile* prof) override {
    WorkspaceScope scope(ws);
    const Mamba2Settings& s = m_.s;
    const int64_t Bt = dout.size(0), T = dout.size(1), Di = s.d_inner, Cc = s.conv_channels();
    const int64_t GN = s.n_groups * s.d_state;
    if (recompute) {
      conv(ws, prof);
      gate(ws, prof);
    }
    Tensor dgated = ws.take({Bt, T, Di}, dout.dtype());
    {
      Timed t(prof, &StepProfile::matmul);
      ops::linear_backward(gated_, m_.out_proj.weight, dout, &dgated, &g.of(m_.out_proj.weight),
                           g.of_optional(m_.out_proj.bias));
    }
    Tensor dzxbcdt = ws.take({Bt, T, m_.in_proj.out}, dout.dtype());
    Tensor dxbc = ws.take({Bt, T, Cc}, dout.dtype());
    Tensor dy = ws.take({Bt, T, Di}, dout.dtype());
    {
      Timed t(prof, &StepProfile::other);
      Tensor dz = dzxbcdt.slice(2, m_.z_offset(), Di);
      const Tensor z = zxbcdt_.slice(2, m_.z_offset(), Di);
      if (s.gated_norm)
        ops::gated_rmsnorm_backward(y_, z, m_.norm_weight, Di / s.n_groups, s.norm_before_gate, float(s.norm_eps),
                                    dgated, dy, &dz, &g.of(m_.norm_weight));
      else ops::gated_activation_backward(ops::Activation::Silu, z, y_, 1.0f, dgated, &dz, &dy);
    }
    Tensor dA = ws.zeros({s.n_heads});
    ops::SsdGrads sg;
    sg.dx = dxbc.slice(2, 0, Di);
    sg.dB = dxbc.slice(2, Di, GN);
    sg.dC = dxbc.slice(2, Di + GN, GN);
    sg.ddt = dzxbcdt.slice(2, m_.dt_offset(), s.n_heads);
    sg.dA = dA;
    sg.dD = g.of(m_.D);
    sg.ddt_bias = g.of(m_.dt_bias);
    {
      Timed t(prof, &StepProfile::mixing);
      ops::ssd_backward(ssd_inputs(), Tensor(), dy, sg, Tensor(), chunk_states_);
      chunk_states_ = Tensor();  // back to the pool before the layer below runs its backward
    }
    ops::add_product_inplace(g.of(m_.A_log), dA, A_);  // dA_log = dA ⊙ A (A = -exp(A_log))
    {
      Timed t(prof, &StepProfile::conv);
      Tensor dxbc_in = dzxbcdt.slice(2, m_.xbc_offset(), Cc);
      Tensor gw = g.of(m_.conv_weight).view({Cc, s.d_conv});
      ops::conv1d_causal_backward(zxbcdt_.slice(2, m_.xbc_offset(), Cc), m_.conv_taps(), m_.conv_bias, true,
                                  Tensor(), dxbc, dxbc_in, &gw, g.of_optional(m_.conv_bias));
    }
    if (m_.in_proj_scale.defined()) ops::scale_columns(dzxbcdt, m_.in_proj_scale);
    Timed t(prof, &StepProfile::matmul);
    ops::linear_backward(x_, m_.in_proj.weight, dzxbcdt, &dx, &g.of(m_.in_proj.weight),
                         g.of_optional(m_.in_proj.bias));
  }

 private:
  // xBC after the causal conv + SiLU, from in_proj's output (into xbc_, taken here).
  void conv(Workspace& ws, StepProfile* prof) {
    const int64_t Cc = m_.s.conv_channels();
    xbc_ = ws.take({zxbcdt_.size(0), zxbcdt_.size(1), Cc}, zxbcdt_.dtype());
    Timed t(prof, &StepProfile::conv);
    ops::conv1d_causal(zxbcdt_.slice(2, m_.xbc_offset(), Cc), m_.conv_taps(), m_.conv_bias, true, nullptr, xbc_);
  }
  // The gate of the SSD's output into out_proj's input (into gated_, taken here).
  void gate(Workspace& ws, StepProfile* prof) {
    gated_ = ws.take(y_.shape(), y_.dtype());
    Timed t(prof, &StepProfile::other);
    m_.gate(y_, zxbcdt_.slice(2, m_.z_offset(), m_.s.d_inner), gated_);
  }
  ops::SsdInputs ssd_inputs() const {
    return m_.ssd_inputs(xbc_, zxbcdt_.slice(2, m_.dt_offset(), m_.s.n_heads), A_);
  }

  const Mamba2Mixer& m_;
  Tensor x_, zxbcdt_, xbc_, y_, gated_, A_;
  Tensor chunk_states_;  // the SSD's chunk states from forward to backward (none on the CPU or with recompute)
};

}  // namespace

std::unique_ptr<MixerTraining> Mamba2Mixer::training() const { return std::make_unique<Mamba2Training>(*this); }

}  // namespace ssm
