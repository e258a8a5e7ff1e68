#include "nn/init_util.h"

#include <algorithm>
#include <cmath>

namespace ssm::init {

void uniform(Tensor& t, Rng& rng, double bound) {
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(float(-bound), float(bound));
}

void normal(Tensor& t, Rng& rng, double std) {
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(std) * rng.normal();
}

void constant(Tensor& t, float value) {
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = value;
}

void dt_bias(Tensor& t, Rng& rng, double dt_min, double dt_max, double dt_floor) {
  float* p = t.data<float>();
  const double lo = std::log(dt_min), hi = std::log(dt_max);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double dt = std::max(std::exp(lo + double(rng.uniform()) * (hi - lo)), dt_floor);
    p[i] = float(dt + std::log(-std::expm1(-dt)));
  }
}

}  // namespace ssm::init
