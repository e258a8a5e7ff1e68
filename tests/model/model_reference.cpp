#include "model/model_reference.h"

#include <cmath>

#include "ops/ref/cross_entropy.h"
#include "ops/ref/linear.h"
#include "ops/ref/mlstm.h"
#include "ops/ref/rmsnorm.h"

namespace ssm::testing {

namespace {

// The final normalised rows times the logit multiplier, [M, D].
Vec final_rows(const ModelConfig& c, const Params& P, const Tensor& ids) {
  const int64_t Bt = ids.size(0), T = ids.size(1), M = Bt * T, D = c.d_model;
  const Vec& emb = P.at(c.embedding_name);
  Vec h(static_cast<size_t>(M * D));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t d = 0; d < D; ++d) h[size_t(i * D + d)] = c.embedding_scale * emb[size_t(ids.data<int32_t>()[i] * D + d)];
  for (const BranchPlan& branch : c.branches) {
    const Vec normed = ref::rmsnorm(h, P.at(branch.norm), M, D, c.norm_eps);
    Vec sum(h.size(), 0.0);
    for (const MixerPlan& mixer : branch.mixers) {
      Vec input = normed;
      for (double& v : input) v *= mixer.input_scale;
      const Vec out = reference_mixer(mixer, P, input, Bt, T);
      for (size_t i = 0; i < h.size(); ++i) sum[i] += mixer.output_scale * out[i];
    }
    for (size_t i = 0; i < h.size(); ++i) h[i] += sum[i];
  }
  Vec fin = ref::rmsnorm(h, P.at(c.final_norm_name), M, D, c.norm_eps);
  for (double& v : fin) v *= c.logit_scale;
  return fin;
}

const Vec& head(const ModelConfig& c, const Params& P) {
  return P.at(c.tie_embeddings() ? c.embedding_name : c.head_name);
}

}  // namespace

Vec reference_logits(const ModelConfig& c, const Params& P, const Tensor& ids) {
  const int64_t M = ids.numel();
  const Vec logits = ref::linear(final_rows(c, P, ids), head(c, P), {}, M, c.vocab_size, c.d_model);
  return c.logit_soft_cap > 0 ? ref::soft_cap(logits, c.logit_soft_cap) : logits;
}

double reference_loss(const ModelConfig& c, const Params& P, const Tensor& ids, const Tensor& targets) {
  const int64_t M = ids.numel();
  std::vector<int32_t> tg(targets.data<int32_t>(), targets.data<int32_t>() + M);
  return ref::cross_entropy(final_rows(c, P, ids), head(c, P), tg, M, c.d_model, c.vocab_size);
}

}  // namespace ssm::testing
