// Attention's training face: the forward keeps q, k, v (after RoPE), the attention output and its
// log-sum-exp; the backward recomputes the probabilities tile by tile (flash-attention-2).
#include "nn/device_values.h"
#include "nn/mixers/attention/attention.h"
#include "ops/ops_backward.h"

namespace ssm {

namespace {

class AttentionTraining final : public MixerTraining {
 public:
  explicit AttentionTraining(const AttentionMixer& mixer) : m_(mixer) {}

  void forward(const Tensor& x, Tensor& y, Workspace& ws, StepProfile* prof) override {
    const AttentionSettings& s = m_.s;
    const int64_t B = x.size(0), T = x.size(1), qw = s.n_heads * s.head_dim, kw = s.n_kv_heads * s.head_dim;
    x_ = x;
    positions_ = host_filled_i32(ws, {B, T}, [&](int32_t* p) {
      for (int64_t i = 0; i < B * T; ++i) p[i] = int32_t(i % T);
    });
    q_ = ws.take({B, T, qw}, x.dtype());
    k_ = ws.take({B, T, kw}, x.dtype());
    v_ = ws.take({B, T, kw}, x.dtype());
    o_ = ws.take({B, T, qw}, x.dtype());
    lse_ = ws.take({B, s.n_heads, T});
    {
      Timed t(prof, &StepProfile::matmul);
      m_.project(x, positions_, q_, k_, v_);
    }
    {
      Timed t(prof, &StepProfile::mixing);
      ops::attention(q_, k_, v_, m_.params(), o_, &lse_);
    }
    Timed t(prof, &StepProfile::matmul);
    m_.o_proj.forward(o_, y);
  }

  void backward(const Tensor& dy, Tensor& dx, Gradients& g, Workspace& ws, StepProfile* prof) override {
    WorkspaceScope scope(ws);
    const AttentionSettings& s = m_.s;
    const auto like = [&](const Tensor& t) { return ws.take(t.shape(), t.dtype()); };
    Tensor d_o = like(o_), dq = like(q_), dk = like(k_), dv = like(v_);
    {
      Timed t(prof, &StepProfile::matmul);
      ops::linear_backward(o_, m_.o_proj.weight, dy, &d_o, &g.of(m_.o_proj.weight), g.of_optional(m_.o_proj.bias));
    }
    {
      Timed t(prof, &StepProfile::mixing);
      ops::attention_backward(q_, k_, v_, o_, lse_, d_o, m_.params(), dq, dk, dv);
    }
    {
      Timed t(prof, &StepProfile::other);
      if (s.rotary_dim > 0) {
        ops::rope_backward(dq, positions_, m_.rope());
        ops::rope_backward(dk, positions_, m_.rope());
      }
      if (s.key_scale != 1.0f) ops::scale(dk, s.key_scale, dk);
    }
    Timed t(prof, &StepProfile::matmul);
    ops::linear_backward(x_, m_.q_proj.weight, dq, &dx, &g.of(m_.q_proj.weight), g.of_optional(m_.q_proj.bias));
    ops::linear_backward(x_, m_.k_proj.weight, dk, &dx, &g.of(m_.k_proj.weight), g.of_optional(m_.k_proj.bias),
                         /*accumulate_dx=*/true);
    ops::linear_backward(x_, m_.v_proj.weight, dv, &dx, &g.of(m_.v_proj.weight), g.of_optional(m_.v_proj.bias),
                         /*accumulate_dx=*/true);
  }

 private:
  const AttentionMixer& m_;
  Tensor x_, positions_, q_, k_, v_, o_, lse_;
};

}  // namespace

std::unique_ptr<MixerTraining> AttentionMixer::training() const { return std::make_unique<AttentionTraining>(*this); }

}  // namespace ssm
