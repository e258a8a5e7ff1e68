#include "train/model_backward.h"

#include <malloc.h>

#include <chrono>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "nn/mamba1_mixer.h"
#include "nn/mamba2_mixer.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"

namespace ssm {

void keep_freed_memory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

// ---- gradients ----

ModelGrads::ModelGrads(LanguageModel& model) : params_(model.params()) {
  grads_.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    grads_.push_back(Tensor::zeros(params_[i].shape));
    index_[params_[i].tensor] = i;
  }
}

Tensor& ModelGrads::of(const Tensor& param) {
  auto it = index_.find(&param);
  SSM_CHECK(it != index_.end(), "ModelGrads: tensor {} is not a parameter of the model", shape_str(param.shape()));
  return grads_[it->second];
}

std::vector<Tensor*> ModelGrads::tensors() {
  std::vector<Tensor*> out;
  for (Tensor& g : grads_) out.push_back(&g);
  return out;
}

void ModelGrads::zero() {
  for (Tensor& g : grads_)
    if (g.nbytes()) std::memset(g.raw(), 0, g.nbytes());
}

namespace {

using Clock = std::chrono::steady_clock;

// Adds the time from construction to destruction into *slot (when profiling).
class Timed {
 public:
  Timed(StepProfile* profile, double StepProfile::*slot) : profile_(profile), slot_(slot) {
    if (profile_) start_ = Clock::now();
  }
  ~Timed() {
    if (profile_) profile_->*slot_ += std::chrono::duration<double>(Clock::now() - start_).count();
  }

 private:
  StepProfile* profile_;
  double StepProfile::*slot_;
  Clock::time_point start_;
};

// g_A_log += dA ⊙ A  (A = -exp(A_log), so dA/dA_log = A).
void add_dA_log(const Tensor& dA, const Tensor& A, Tensor& g_A_log) {
  const float* d = dA.data<float>();
  const float* a = A.data<float>();
  float* g = g_A_log.data<float>();
  for (int64_t i = 0; i < dA.numel(); ++i) g[i] += d[i] * a[i];
}

// ---- Mamba-1 ----

struct Mamba1Saved {
  Tensor x, xz, u, x_dbl, delta, y, chunk_states, A;
};


// The scan's inputs as views of the activations saved by the forward.
ops::SelectiveScanInputs saved_scan_inputs(const Mamba1Mixer& m, const Mamba1Saved& s) {
  const int64_t Di = m.d_inner, R = m.dt_rank, N = m.d_state;
  ops::SelectiveScanInputs in;
  in.u = s.u;
  in.delta = s.delta;
  in.delta_bias = m.dt_proj.bias;
  in.A = s.A;
  in.B = s.x_dbl.slice(2, R, N);
  in.C = s.x_dbl.slice(2, R + N, N);
  in.D = m.D;
  in.z = s.xz.slice(2, Di, Di);
  return in;
}

void mamba1_forward(const Mamba1Mixer& m, const Tensor& x, Tensor& out, Mamba1Saved& s, int64_t chunk,
                    StepProfile* prof) {
  const int64_t Bt = x.size(0), T = x.size(1), Di = m.d_inner, R = m.dt_rank, N = m.d_state;
  s.x = x;
  s.xz = Tensor::empty({Bt, T, 2 * Di});
  s.u = Tensor::empty({Bt, T, Di});
  s.x_dbl = Tensor::empty({Bt, T, R + 2 * N});
  s.delta = Tensor::empty({Bt, T, Di});
  s.y = Tensor::empty({Bt, T, Di});
  s.A = m.A();
  {
    Timed t(prof, &StepProfile::matmul);
    ops::linear(x, m.in_proj.weight, m.in_proj.bias, s.xz);
  }
  {
    Timed t(prof, &StepProfile::conv);
    ops::conv1d_causal(s.xz.slice(2, 0, Di), m.conv_weight.view({Di, m.d_conv}), m.conv_bias, true, nullptr, s.u);
  }
  {
    Timed t(prof, &StepProfile::matmul);
    ops::linear(s.u, m.x_proj.weight, m.x_proj.bias, s.x_dbl);
    ops::linear(s.x_dbl.slice(2, 0, R), m.dt_proj.weight, Tensor(), s.delta);
  }
  const ops::SelectiveScanInputs in = saved_scan_inputs(m, s);
  {
    Timed t(prof, &StepProfile::scan);
    s.chunk_states = ops::selective_scan_forward_saving_chunk_states(in, Tensor(), chunk, s.y);
  }
  Timed t(prof, &StepProfile::matmul);
  ops::linear(s.y, m.out_proj.weight, m.out_proj.bias, out);
}

// dout → dx (written); parameter gradients accumulated.
void mamba1_backward(const Mamba1Mixer& m, const Mamba1Saved& s, const Tensor& dout, Tensor& dx, ModelGrads& g,
                     int64_t chunk, StepProfile* prof) {
  const int64_t Bt = dout.size(0), T = dout.size(1), Di = m.d_inner, R = m.dt_rank, N = m.d_state;
  Tensor dy = Tensor::empty({Bt, T, Di});
  {
    Timed t(prof, &StepProfile::matmul);
    ops::linear_backward(s.y, m.out_proj.weight, dout, &dy, &g.of(m.out_proj.weight),
                         m.out_proj.bias.defined() ? &g.of(m.out_proj.bias) : nullptr);
  }
  Tensor dxz = Tensor::empty({Bt, T, 2 * Di});
  Tensor dx_dbl = Tensor::empty({Bt, T, R + 2 * N});
  Tensor du = Tensor::empty({Bt, T, Di});
  Tensor ddelta = Tensor::empty({Bt, T, Di});
  Tensor dA = Tensor::zeros({Di, N});
  const ops::SelectiveScanInputs in = saved_scan_inputs(m, s);
  ops::SelectiveScanGrads sg;
  sg.du = du;
  sg.ddelta = ddelta;
  sg.dA = dA;
  sg.dB = dx_dbl.slice(2, R, N);
  sg.dC = dx_dbl.slice(2, R + N, N);
  if (m.D.defined()) sg.dD = g.of(m.D);
  sg.dz = dxz.slice(2, Di, Di);
  if (m.dt_proj.bias.defined()) sg.ddelta_bias = g.of(m.dt_proj.bias);
  {
    Timed t(prof, &StepProfile::scan);
    ops::selective_scan_backward(in, Tensor(), s.chunk_states, chunk, dy, sg);
  }
  add_dA_log(dA, s.A, g.of(m.A_log));
  {
    Timed t(prof, &StepProfile::matmul);
    Tensor ddt_in = dx_dbl.slice(2, 0, R);
    ops::linear_backward(s.x_dbl.slice(2, 0, R), m.dt_proj.weight, ddelta, &ddt_in, &g.of(m.dt_proj.weight), nullptr);
    ops::linear_backward(s.u, m.x_proj.weight, dx_dbl, &du, &g.of(m.x_proj.weight),
                         m.x_proj.bias.defined() ? &g.of(m.x_proj.bias) : nullptr, /*accumulate_dx=*/true);
  }
  {
    Timed t(prof, &StepProfile::conv);
    Tensor dxin = dxz.slice(2, 0, Di);
    Tensor gw = g.of(m.conv_weight).view({Di, m.d_conv});
    ops::conv1d_causal_backward(s.xz.slice(2, 0, Di), m.conv_weight.view({Di, m.d_conv}), m.conv_bias, true, Tensor(),
                                du, dxin, &gw, m.conv_bias.defined() ? &g.of(m.conv_bias) : nullptr);
  }
  Timed t(prof, &StepProfile::matmul);
  ops::linear_backward(s.x, m.in_proj.weight, dxz, &dx, &g.of(m.in_proj.weight),
                       m.in_proj.bias.defined() ? &g.of(m.in_proj.bias) : nullptr);
}

// ---- Mamba-2 ----

struct Mamba2Saved {
  Tensor x, zxbcdt, xbc, y, normed;
  ops::SsdInputs in;
};

void mamba2_forward(const Mamba2Mixer& m, const Tensor& x, Tensor& out, Mamba2Saved& s, StepProfile* prof) {
  const int64_t Bt = x.size(0), T = x.size(1), Di = m.d_inner, Cc = m.conv_channels();
  s.x = x;
  s.zxbcdt = Tensor::empty({Bt, T, m.in_proj.out});
  s.xbc = Tensor::empty({Bt, T, Cc});
  s.y = Tensor::empty({Bt, T, Di});
  s.normed = Tensor::empty({Bt, T, Di});
  {
    Timed t(prof, &StepProfile::matmul);
    ops::linear(x, m.in_proj.weight, m.in_proj.bias, s.zxbcdt);
  }
  {
    Timed t(prof, &StepProfile::conv);
    ops::conv1d_causal(s.zxbcdt.slice(2, m.xbc_offset(), Cc), m.conv_weight.view({Cc, m.d_conv}), m.conv_bias, true,
                       nullptr, s.xbc);
  }
  s.in = m.ssd_inputs(s.xbc, s.zxbcdt.slice(2, m.dt_offset(), m.n_heads));
  {
    Timed t(prof, &StepProfile::scan);
    ops::ssd(s.in, nullptr, s.y);
  }
  {
    Timed t(prof, &StepProfile::other);
    ops::gated_rmsnorm(s.y, s.zxbcdt.slice(2, m.z_offset(), Di), m.norm_weight, Di / m.n_groups, m.norm_before_gate,
                       m.norm_eps, s.normed);
  }
  Timed t(prof, &StepProfile::matmul);
  ops::linear(s.normed, m.out_proj.weight, m.out_proj.bias, out);
}

void mamba2_backward(const Mamba2Mixer& m, const Mamba2Saved& s, const Tensor& dout, Tensor& dx, ModelGrads& g,
                     StepProfile* prof) {
  const int64_t Bt = dout.size(0), T = dout.size(1), Di = m.d_inner, Cc = m.conv_channels();
  const int64_t GN = m.n_groups * m.d_state;
  Tensor dnormed = Tensor::empty({Bt, T, Di});
  {
    Timed t(prof, &StepProfile::matmul);
    ops::linear_backward(s.normed, m.out_proj.weight, dout, &dnormed, &g.of(m.out_proj.weight),
                         m.out_proj.bias.defined() ? &g.of(m.out_proj.bias) : nullptr);
  }
  Tensor dzxbcdt = Tensor::empty({Bt, T, m.in_proj.out});
  Tensor dxbc = Tensor::empty({Bt, T, Cc});
  Tensor dy = Tensor::empty({Bt, T, Di});
  {
    Timed t(prof, &StepProfile::other);
    Tensor dz = dzxbcdt.slice(2, m.z_offset(), Di);
    ops::gated_rmsnorm_backward(s.y, s.zxbcdt.slice(2, m.z_offset(), Di), m.norm_weight, Di / m.n_groups,
                                m.norm_before_gate, m.norm_eps, dnormed, dy, &dz, &g.of(m.norm_weight));
  }
  Tensor dA = Tensor::zeros({m.n_heads});
  ops::SsdGrads sg;
  sg.dx = dxbc.slice(2, 0, Di);
  sg.dB = dxbc.slice(2, Di, GN);
  sg.dC = dxbc.slice(2, Di + GN, GN);
  sg.ddt = dzxbcdt.slice(2, m.dt_offset(), m.n_heads);
  sg.dA = dA;
  if (m.D.defined()) sg.dD = g.of(m.D);
  if (m.dt_bias.defined()) sg.ddt_bias = g.of(m.dt_bias);
  {
    Timed t(prof, &StepProfile::scan);
    ops::ssd_backward(s.in, Tensor(), dy, sg);
  }
  add_dA_log(dA, s.in.A, g.of(m.A_log));
  {
    Timed t(prof, &StepProfile::conv);
    Tensor dxbc_in = dzxbcdt.slice(2, m.xbc_offset(), Cc);
    Tensor gw = g.of(m.conv_weight).view({Cc, m.d_conv});
    ops::conv1d_causal_backward(s.zxbcdt.slice(2, m.xbc_offset(), Cc), m.conv_weight.view({Cc, m.d_conv}), m.conv_bias,
                                true, Tensor(), dxbc, dxbc_in, &gw,
                                m.conv_bias.defined() ? &g.of(m.conv_bias) : nullptr);
  }
  Timed t(prof, &StepProfile::matmul);
  ops::linear_backward(s.x, m.in_proj.weight, dzxbcdt, &dx, &g.of(m.in_proj.weight),
                       m.in_proj.bias.defined() ? &g.of(m.in_proj.bias) : nullptr);
}

// The training face of one mixer layer: a forward that keeps what its backward needs, and that
// backward. Adding a trainable mixer means one more class here and one line in training_face().
class MixerTraining {
 public:
  virtual ~MixerTraining() = default;
  virtual void forward(const Tensor& x, Tensor& y, StepProfile* prof) = 0;
  // dy → dx (written), parameter gradients accumulated; the saved activations are released.
  virtual void backward(const Tensor& dy, Tensor& dx, ModelGrads& grads, StepProfile* prof) = 0;
};

class Mamba1Training : public MixerTraining {
 public:
  Mamba1Training(const Mamba1Mixer& mixer, int64_t chunk) : mixer_(mixer), chunk_(chunk) {}
  void forward(const Tensor& x, Tensor& y, StepProfile* prof) override {
    mamba1_forward(mixer_, x, y, saved_, chunk_, prof);
  }
  void backward(const Tensor& dy, Tensor& dx, ModelGrads& grads, StepProfile* prof) override {
    mamba1_backward(mixer_, saved_, dy, dx, grads, chunk_, prof);
    saved_ = {};
  }

 private:
  const Mamba1Mixer& mixer_;
  int64_t chunk_;
  Mamba1Saved saved_;
};

class Mamba2Training : public MixerTraining {
 public:
  explicit Mamba2Training(const Mamba2Mixer& mixer) : mixer_(mixer) {}
  void forward(const Tensor& x, Tensor& y, StepProfile* prof) override { mamba2_forward(mixer_, x, y, saved_, prof); }
  void backward(const Tensor& dy, Tensor& dx, ModelGrads& grads, StepProfile* prof) override {
    mamba2_backward(mixer_, saved_, dy, dx, grads, prof);
    saved_ = {};
  }

 private:
  const Mamba2Mixer& mixer_;
  Mamba2Saved saved_;
};

std::unique_ptr<MixerTraining> training_face(const Mixer& mixer, const TrainPassOptions& options) {
  if (const auto* m1 = dynamic_cast<const Mamba1Mixer*>(&mixer))
    return std::make_unique<Mamba1Training>(*m1, options.scan_chunk);
  if (const auto* m2 = dynamic_cast<const Mamba2Mixer*>(&mixer)) return std::make_unique<Mamba2Training>(*m2);
  fail("training supports Mamba-1 and Mamba-2 mixers; this model has another");
}

void check_batch(const Tensor& ids, const Tensor& targets, int64_t vocab) {
  SSM_CHECK(ids.dtype() == DType::I32 && ids.dim() == 2 && ids.is_contiguous() && ids.size(0) > 0 && ids.size(1) > 0,
            "training ids must be contiguous I32 [batch, length], got {}", shape_str(ids.shape()));
  SSM_CHECK(targets.dtype() == DType::I32 && targets.shape() == ids.shape() && targets.is_contiguous(),
            "training targets must be contiguous I32 {}, got {}", shape_str(ids.shape()), shape_str(targets.shape()));
  const int32_t* p = ids.data<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    SSM_CHECK(p[i] >= 0 && p[i] < vocab, "token id {} is outside the model's vocabulary ({})", p[i], vocab);
}

}  // namespace

TrainingPass::TrainingPass(LanguageModel& model, const TrainPassOptions& options) : model_(model), options_(options) {
  SSM_CHECK(options.scan_chunk >= 1 && options.vocab_chunk >= 1, "TrainingPass: chunks must be positive");
}

double TrainingPass::forward_backward(const Tensor& ids, const Tensor& targets, ModelGrads& grads, float grad_scale,
                                      StepProfile* prof) {
  const ModelConfig& c = model_.config();
  check_batch(ids, targets, c.vocab_size);
  const int64_t Bt = ids.size(0), T = ids.size(1), D = c.d_model, L = c.n_layers, M = Bt * T;
  const float eps = float(c.norm_eps);
  const auto& blocks = model_.blocks();

  // Forward, saving the residual stream and each mixer's activations.
  std::vector<Tensor> h(static_cast<size_t>(L + 1));
  std::vector<std::unique_ptr<MixerTraining>> faces;
  {
    Timed t(prof, &StepProfile::other);
    h[0] = model_.embed(ids);
  }
  for (int64_t i = 0; i < L; ++i) {
    Tensor normed = Tensor::empty({Bt, T, D});
    {
      Timed t(prof, &StepProfile::other);
      ops::rmsnorm(h[size_t(i)], blocks[size_t(i)].norm, eps, normed);
    }
    Tensor mixed = Tensor::empty({Bt, T, D});
    faces.push_back(training_face(*blocks[size_t(i)].mixer, options_));
    faces.back()->forward(normed, mixed, prof);
    Timed t(prof, &StepProfile::other);
    h[size_t(i + 1)] = h[size_t(i)].clone();
    ops::add_inplace(h[size_t(i + 1)], mixed);
  }
  Tensor final_normed = Tensor::empty({M, D});
  Tensor dfinal = Tensor::empty({M, D});
  double loss;
  {
    Timed t(prof, &StepProfile::other);
    ops::rmsnorm(h[size_t(L)].view({M, D}), model_.final_norm(), eps, final_normed);
  }
  {
    Timed t(prof, &StepProfile::matmul);
    ops::CrossEntropyOptions ce;
    ce.vocab_chunk = options_.vocab_chunk;
    ce.grad_scale = grad_scale;
    loss = ops::cross_entropy(final_normed, model_.head_weight(), targets.view({M}), &dfinal,
                              &grads.of(model_.head_weight()), ce);
  }

  // Backward.
  Tensor dh = Tensor::empty({Bt, T, D});
  {
    Timed t(prof, &StepProfile::other);
    Tensor dh2 = dh.view({M, D});
    ops::rmsnorm_backward(h[size_t(L)].view({M, D}), model_.final_norm(), eps, dfinal, dh2,
                          &grads.of(model_.final_norm()));
  }
  Tensor dnormed = Tensor::empty({Bt, T, D});
  for (int64_t i = L - 1; i >= 0; --i) {
    faces[size_t(i)]->backward(dh, dnormed, grads, prof);
    faces[size_t(i)].reset();
    Timed t(prof, &StepProfile::other);
    ops::rmsnorm_backward(h[size_t(i)], blocks[size_t(i)].norm, eps, dnormed, dh, &grads.of(blocks[size_t(i)].norm),
                          /*accumulate_dx=*/true);
  }
  Timed t(prof, &StepProfile::other);
  ops::embedding_backward(ids, dh, grads.of(model_.embedding()));
  return loss;
}

double TrainingPass::loss(const Tensor& ids, const Tensor& targets, int64_t* counted) {
  const ModelConfig& c = model_.config();
  check_batch(ids, targets, c.vocab_size);
  const int64_t Bt = ids.size(0), T = ids.size(1), D = c.d_model, M = Bt * T;
  const float eps = float(c.norm_eps);
  Tensor h = model_.embed(ids);
  Tensor normed = Tensor::empty({Bt, T, D}), mixed = Tensor::empty({Bt, T, D});
  for (const Block& block : model_.blocks()) {
    ops::rmsnorm(h, block.norm, eps, normed);
    block.mixer->forward(normed, nullptr, mixed);
    ops::add_inplace(h, mixed);
  }
  Tensor final_normed = Tensor::empty({M, D});
  ops::rmsnorm(h.view({M, D}), model_.final_norm(), eps, final_normed);
  ops::CrossEntropyOptions ce;
  ce.vocab_chunk = options_.vocab_chunk;
  return ops::cross_entropy(final_normed, model_.head_weight(), targets.view({M}), nullptr, nullptr, ce, counted);
}

}  // namespace ssm
