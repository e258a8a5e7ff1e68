// The MoE's training face: the forward keeps the routing and its dispatch plan (moe_routing.h: made
// on the host, as for inference, and copied to a GPU layer's device), each expert's saved activations
// (on its own rows) and the combine's inputs; the backward goes through the combine, the experts, the
// gather and the router (only the routing weights carry gradient to the router).
#include <optional>
#include <vector>

#include "nn/mixers/mlp/mlp_training.h"
#include "nn/mixers/moe/moe.h"
#include "nn/mixers/moe/moe_routing.h"
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
    {
      Timed t(prof, &StepProfile::matmul);
      m_.router.forward(x_, logits_);
    }
    {
      Timed t(prof, &StepProfile::other);
      routing_ = route_tokens(logits_, m_.correction_bias, s.router, ws);
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
      ops::moe_gather(latent_in_, routing_.plan, 0, rows_);
    }
    experts_.clear();
    for (int64_t e = 0; e < E; ++e) {
      experts_.emplace_back(m_.experts[size_t(e)]);
      if (routing_.count(e) == 0) continue;
      Tensor out = outputs_.slice(0, routing_.first(e), routing_.count(e));
      experts_.back().forward(rows_.slice(0, routing_.first(e), routing_.count(e)), out, ws, prof);
    }
    combined_ = s.latent_size > 0 ? ws.take({M, Dx}) : y;
    {
      Timed t(prof, &StepProfile::other);
      ops::fill(combined_, 0.0f);
      ops::moe_scatter_add(outputs_, routing_.weights, routing_.plan, 0, combined_);
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
      ops::moe_scatter_add_backward(outputs_, routing_.weights, routing_.plan, 0, dcombined, &doutputs, &dweights);
    }
    for (int64_t e = 0; e < E; ++e) {
      if (routing_.count(e) == 0) continue;
      Tensor drow = drows.slice(0, routing_.first(e), routing_.count(e));
      experts_[size_t(e)].backward(doutputs.slice(0, routing_.first(e), routing_.count(e)), drow, g, ws, prof);
    }
    experts_.clear();
    // The gather's backward: each token's rows summed back (a scatter-add with unit weights).
    Tensor dlatent = s.latent_size > 0 ? ws.take({M, Dx}) : dx;
    {
      Timed t(prof, &StepProfile::other);
      ops::fill(dlatent, 0.0f);
      ops::moe_scatter_add(drows, Tensor(), routing_.plan, 0, dlatent);
    }
    Timed t(prof, &StepProfile::matmul);
    if (s.latent_size > 0)
      ops::linear_backward(x_, m_.fc1_latent.weight, dlatent, &dx, &g.of(m_.fc1_latent.weight),
                           g.of_optional(m_.fc1_latent.bias));
    Tensor dlogits = ws.take({M, E});
    ops::moe_route_backward(logits_, routing_.indices, s.router, dweights, dlogits);
    ops::linear_backward(x_, m_.router.weight, dlogits, &dx, &g.of(m_.router.weight), nullptr, /*accumulate_dx=*/true);
    if (shared_) {
      Tensor dshared = ws.take({M, D});
      shared_->backward(dy, dshared, g, ws, prof);
      ops::add_inplace(dx, dshared);
      shared_.reset();
    }
  }

 private:
  const MoeMixer& m_;
  Tensor x_, logits_, latent_in_, rows_, outputs_, combined_;
  MoeRouting routing_;
  std::vector<MlpTraining> experts_;
  std::optional<MlpTraining> shared_;
};

}  // namespace

std::unique_ptr<MixerTraining> MoeMixer::training() const { return std::make_unique<MoeTraining>(*this); }

}  // namespace ssm
