#include "ops/ref/activation.h"

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace ssm::ref {

double activation(ops::Activation act, double x) {
  switch (act) {
    case ops::Activation::Silu:
      return x / (1.0 + std::exp(-x));
    case ops::Activation::Gelu:
      return 0.5 * x * (1.0 + std::erf(x / std::numbers::sqrt2));
    case ops::Activation::GeluTanh:
      return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
    case ops::Activation::Relu2:
      return x > 0.0 ? x * x : 0.0;
    case ops::Activation::Sigmoid:
      return 1.0 / (1.0 + std::exp(-x));
  }
  fail("ref::activation: unknown Activation value {}", int(act));
}

std::vector<double> activation(ops::Activation act, const std::vector<double>& x) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = activation(act, x[i]);
  return y;
}

std::vector<double> gated_activation(ops::Activation act, const std::vector<double>& gate,
                                     const std::vector<double>& up, double gate_scale) {
  SSM_CHECK(gate.size() == up.size(), "ref::gated_activation: gate has {} values, up {}", gate.size(), up.size());
  std::vector<double> y(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) y[i] = activation(act, gate_scale * gate[i]) * up[i];
  return y;
}

}  // namespace ssm::ref
