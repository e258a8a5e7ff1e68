// The MoE's training face: the forward keeps the routing, the dispatch plan, each expert's saved
// activations (on its own rows) and the combine's inputs; the backward goes through the combine,
// the experts, the gather and the router (only the routing weights carry gradient to the router).
#include <optional>
#include <vector>

#include "nn/mixers/mlp/mlp_training.h"
#include "nn/mixers/moe/moe.h"
#include "ops/ops_backward.h"

namespace ssm {

namespace {

class MoeTraining final : public MixerTraining {
 public:
  explicit MoeTraining(const MoeMixer& mixer) : m_(mixer) {}

  void forward(const Tensor& x_in, Tensor& y_out, Workspace& ws, StepProfile* prof) override {
    const MoeSettings& s = m_.s;
    const int64_t M = x_in.rows(), D = s.d_model, k = s.router.top_k, E = s.n_experts, Dx = s.expert.d_model;
    x_ = x_in.view({M, D});
    Tensor y = y_out.view({M, D});
    logits_ = ws.take({M, E});
    indices_ = ws.take({M, k}, DType::I32);
    weights_ = ws.take({M, k});
    plan_.expert_offsets = ws.take({E + 1}, DType::I32);
    plan_.row_token = ws.take({M * k}, DType::I32);
    plan_.row_slot = ws.take({M * k}, DType::I32);
    plan_.slot_row = ws.take({M, k}, DType::I32);
    {
      Timed t(prof, &StepProfile::matmul);
      m_.router.forward(x_, logits_);
    }
    {
      Timed t(prof, &StepProfile::other);
      ops::moe_route(logits_, m_.correction_bias, s.router, indices_, weights_);
      ops::moe_plan(indices_, plan_);
    }
    latent_in_ = x_;
    if (s.latent_size > 0) {
      Timed t(prof, &StepProfile::matmul);
      latent_in_ = ws.take({M, Dx});
      m_.fc1_latent.forward(x_, latent_in_);
    }
    rows_ = ws.take({M * k, Dx});
    outputs_ = ws.take({M * k, Dx});
    {
      Timed t(prof, &StepProfile::other);
      ops::moe_gather(latent_in_, plan_, 0, rows_);
    }
    experts_.clear();
    for (int64_t e = 0; e < E; ++e) {
      experts_.emplace_back(m_.experts[size_t(e)]);
      if (count(e) == 0) continue;
      Tensor out = outputs_.slice(0, first(e), count(e));
      experts_.back().forward(rows_.slice(0, first(e), count(e)), out, ws, prof);
    }
    combined_ = s.latent_size > 0 ? ws.take({M, Dx}) : y;
    {
      Timed t(prof, &StepProfile::other);
      combined_.fill(0.0f);
      ops::moe_scatter_add(outputs_, weights_, plan_, 0, combined_);
    }
    if (s.latent_size > 0) {
      Timed t(prof, &StepProfile::matmul);
      m_.fc2_latent.forward(combined_, y);
    }
    if (m_.shared) {
      shared_.emplace(*m_.shared);
      Tensor common = ws.take({M, D});
      shared_->forward(x_, common, ws, prof);
      Timed t(prof, &StepProfile::other);
      ops::add_inplace(y, common);
    }
  }

  void backward(const Tensor& dy_in, Tensor& dx_out, Gradients& g, Workspace& ws, StepProfile* prof) override {
    WorkspaceScope scope(ws);
    const MoeSettings& s = m_.s;
    const int64_t M = x_.size(0), D = s.d_model, k = s.router.top_k, E = s.n_experts, Dx = s.expert.d_model;
    const Tensor dy = dy_in.view({M, D});
    Tensor dx = dx_out.view({M, D});
    Tensor dcombined = dy;
    if (s.latent_size > 0) {
      Timed t(prof, &StepProfile::matmul);
      dcombined = ws.take({M, Dx});
      ops::linear_backward(combined_, m_.fc2_latent.weight, dy, &dcombined, &g.of(m_.fc2_latent.weight),
                           g.of_optional(m_.fc2_latent.bias));
    }
    Tensor doutputs = ws.take({M * k, Dx}), dweights = ws.take({M, k}), drows = ws.take({M * k, Dx});
    {
      Timed t(prof, &StepProfile::other);
      ops::moe_scatter_add_backward(outputs_, weights_, plan_, 0, dcombined, &doutputs, &dweights);
    }
    for (int64_t e = 0; e < E; ++e) {
      if (count(e) == 0) continue;
      Tensor drow = drows.slice(0, first(e), count(e));
      experts_[size_t(e)].backward(doutputs.slice(0, first(e), count(e)), drow, g, ws, prof);
    }
    experts_.clear();
    // The gather's backward: each token's rows summed back (a scatter-add with unit weights).
    Tensor dlatent = s.latent_size > 0 ? ws.take({M, Dx}) : dx;
    {
      Timed t(prof, &StepProfile::other);
      dlatent.fill(0.0f);
      ops::moe_scatter_add(drows, Tensor(), plan_, 0, dlatent);
    }
    Timed t(prof, &StepProfile::matmul);
    if (s.latent_size > 0)
      ops::linear_backward(x_, m_.fc1_latent.weight, dlatent, &dx, &g.of(m_.fc1_latent.weight),
                           g.of_optional(m_.fc1_latent.bias));
    Tensor dlogits = ws.take({M, E});
    ops::moe_route_backward(logits_, indices_, s.router, dweights, dlogits);
    ops::linear_backward(x_, m_.router.weight, dlogits, &dx, &g.of(m_.router.weight), nullptr, /*accumulate_dx=*/true);
    if (shared_) {
      Tensor dshared = ws.take({M, D});
      shared_->backward(dy, dshared, g, ws, prof);
      ops::add_inplace(dx, dshared);
      shared_.reset();
    }
  }

 private:
  int64_t first(int64_t e) const { return plan_.expert_offsets.data<int32_t>()[e]; }
  int64_t count(int64_t e) const { return plan_.expert_offsets.data<int32_t>()[e + 1] - first(e); }

  const MoeMixer& m_;
  Tensor x_, logits_, indices_, weights_, latent_in_, rows_, outputs_, combined_;
  ops::MoePlan plan_;
  std::vector<MlpTraining> experts_;
  std::optional<MlpTraining> shared_;
};

}  // namespace

std::unique_ptr<MixerTraining> MoeMixer::training() const { return std::make_unique<MoeTraining>(*this); }

}  // namespace ssm
