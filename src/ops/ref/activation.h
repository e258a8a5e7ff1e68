// Double-precision oracles for ops::activation and ops::gated_activation, written as transformers
// writes them. Pure functions of their inputs.
//
//   silu(x) = x / (1 + e^−x);   gelu(x) = 0.5 x (1 + erf(x / √2));
//   gelu_tanh(x) = 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)));   relu2(x) = max(x, 0)²;
//   sigmoid(x) = 1 / (1 + e^−x).
// Layouts: any, elementwise; gate and up of one size.
#pragma once
#include <vector>

#include "ops/ops.h"  // ops::Activation

namespace ssm::ref {

double activation(ops::Activation act, double x);
std::vector<double> activation(ops::Activation act, const std::vector<double>& x);
// y = act(gate_scale · gate) · up.
std::vector<double> gated_activation(ops::Activation act, const std::vector<double>& gate,
                                     const std::vector<double>& up, double gate_scale);

}  // namespace ssm::ref
