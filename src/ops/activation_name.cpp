// ops::activation_from_name and ops::activation_name: the spellings of transformers' ACT2FN that
// mean one of the activations ops::Activation implements.
#include <array>
#include <string>
#include <string_view>
#include <utility>

#include "core/error.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {
// The first spelling of each activation is its canonical name. The tanh approximations differ only
// in how transformers writes the same formula (gelu_fast rounds √(2/π) to 10 digits, which is the
// same float).
constexpr std::array<std::pair<std::string_view, Activation>, 11> kNames{{
    {"silu", Activation::Silu},
    {"swish", Activation::Silu},
    {"gelu", Activation::Gelu},
    {"gelu_python", Activation::Gelu},
    {"gelu_pytorch_tanh", Activation::GeluTanh},
    {"gelu_python_tanh", Activation::GeluTanh},
    {"gelu_new", Activation::GeluTanh},
    {"gelu_fast", Activation::GeluTanh},
    {"gelu_accurate", Activation::GeluTanh},
    {"relu2", Activation::Relu2},
    {"sigmoid", Activation::Sigmoid},
}};
}  // namespace

Activation activation_from_name(std::string_view name) {
  for (const auto& [spelling, act] : kNames)
    if (spelling == name) return act;
  std::string accepted;
  for (const auto& entry : kNames) accepted += (accepted.empty() ? "" : ", ") + std::string(entry.first);
  fail("unsupported activation \"{}\" (accepted: {})", name, accepted);
}

std::string_view activation_name(Activation act) {
  for (const auto& [spelling, value] : kNames)
    if (value == act) return spelling;
  fail("activation_name: unknown Activation value {}", int(act));
}

}  // namespace ssm::ops
