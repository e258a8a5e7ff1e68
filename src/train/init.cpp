#include "train/init.h"

#include <cmath>
#include <string>

#include "core/error.h"
#include "core/random.h"

namespace ssm {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void uniform(Tensor& t, Rng& rng, double bound) {
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(float(-bound), float(bound));
}
void normal(Tensor& t, Rng& rng, double std) {
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(std) * rng.normal();
}
void constant(Tensor& t, float v) {
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = v;
}
// softplus⁻¹ of dt drawn log-uniformly in [dt_min, dt_max], floored.
void dt_bias(Tensor& t, Rng& rng, const ModelConfig& c) {
  float* p = t.data<float>();
  const double lo = std::log(c.dt_init_min), hi = std::log(c.dt_init_max);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double dt = std::max(std::exp(lo + double(rng.uniform()) * (hi - lo)), c.dt_init_floor);
    p[i] = float(dt + std::log(-std::expm1(-dt)));
  }
}

}  // namespace

void init_parameters(LanguageModel& model, uint64_t seed) {
  model.allocate(DType::F32);
  const ModelConfig& c = model.config();
  Rng rng(seed);
  for (ParamRef& p : model.params()) {
    Tensor& t = *p.tensor;
    const std::string& n = p.name;
    if (p.kind == ParamKind::Embedding || n == "lm_head.weight") {
      normal(t, rng, c.initializer_range);
    } else if (ends_with(n, "norm.weight") || ends_with(n, "norm_f.weight") || ends_with(n, ".D")) {
      constant(t, 1.0f);
    } else if (ends_with(n, ".A_log")) {
      float* a = t.data<float>();
      if (c.mixer == MixerKind::Mamba1) {
        const int64_t N = t.size(1);
        for (int64_t i = 0; i < t.numel(); ++i) a[i] = float(std::log(double(i % N + 1)));
      } else {
        for (int64_t i = 0; i < t.numel(); ++i) a[i] = float(std::log(double(rng.uniform(1.0f, 16.0f))));
      }
    } else if (ends_with(n, ".dt_bias") || ends_with(n, "dt_proj.bias")) {
      dt_bias(t, rng, c);
    } else if (ends_with(n, "dt_proj.weight")) {
      uniform(t, rng, 1.0 / std::sqrt(double(c.dt_rank)));
    } else if (ends_with(n, "conv1d.weight") || ends_with(n, "conv1d.bias")) {
      uniform(t, rng, 1.0 / std::sqrt(double(c.d_conv)));
    } else if (ends_with(n, "_proj.weight")) {  // in_proj, x_proj, out_proj
      double bound = 1.0 / std::sqrt(double(t.size(1)));
      if (ends_with(n, "out_proj.weight") && c.rescale_prenorm_residual) bound /= std::sqrt(double(c.n_layers));
      uniform(t, rng, bound);
    } else if (ends_with(n, ".bias")) {
      constant(t, 0.0f);
    } else {
      fail("init_parameters: no initialisation rule for parameter '{}'", n);
    }
  }
}

}  // namespace ssm
