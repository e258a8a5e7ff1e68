// ops::activation and ops::gated_activation against the double references in ops/ref/activation.h,
// and ops::activation_from_name against transformers' ACT2FN spellings.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "ops/ops.h"
#include "ops/ref/activation.h"
#include "ops/test_threads.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using ops::Activation;

constexpr Activation kAll[] = {Activation::Silu, Activation::Gelu, Activation::GeluTanh, Activation::Relu2,
                               Activation::Sigmoid};

TEST(OpsActivation, MatchesReference) {
  Rng rng(21);
  const test::ScopedThreads threads(3);  // the largest shape is spread over threads
  for (Activation act : kAll) {
    for (const Shape& shape : {Shape{1, 5}, Shape{7, 33}, Shape{3, 130, 17}, Shape{2, 1}, Shape{301, 131}}) {
      for (int mode = 0; mode < 3; ++mode) {  // 0: contiguous, 1: strided x and y, 2: y aliases x
        SCOPED_TRACE(::testing::Message() << ops::activation_name(act) << " " << shape_str(shape) << " mode " << mode);
        const bool strided = mode == 1;
        Tensor x = test::random_tensor(shape, rng, -6, 6, strided);
        const test::Vec want = ref::activation(act, test::to_vec(x));
        Tensor y = mode == 2 ? x : test::nan_tensor(shape, strided);
        ops::activation(act, x, y);
        EXPECT_LT(test::max_rel_err(test::to_vec(y), want), 1e-6);
      }
    }
  }
}

// Values far out in the tails (where the sigmoid saturates and x³ overflows), zero and NaN: each
// element within 1e-6 of the reference relative to max(1, |want|), NaN for NaN.
TEST(OpsActivation, ExtremeInputs) {
  const test::Vec x = {0.0, -0.0, 1e-30, -1e-30, 20, -20, 90, -90, 1e3, -1e3, 1e15, -1e15, 3e38, -3e38};
  for (Activation act : kAll) {
    SCOPED_TRACE(ops::activation_name(act));
    const Tensor xt = test::from_vec(x, {1, int64_t(x.size())});
    Tensor y = test::nan_tensor({1, int64_t(x.size())});
    ops::activation(act, xt, y);
    const test::Vec got = test::to_vec(y), want = ref::activation(act, x);
    for (size_t i = 0; i < x.size(); ++i) {
      const double wanted = std::isinf(want[i]) ? want[i] : double(float(want[i]));  // relu2(3e38) = inf in float
      if (std::isinf(wanted))
        EXPECT_EQ(got[i], wanted) << "x = " << x[i];
      else
        EXPECT_LE(std::abs(got[i] - wanted), 1e-6 * std::max(1.0, std::abs(wanted))) << "x = " << x[i];
    }
    const Tensor nan_in = test::nan_tensor({1, 3});
    Tensor nan_out = Tensor::zeros({1, 3});
    ops::activation(act, nan_in, nan_out);
    for (double v : test::to_vec(nan_out)) EXPECT_TRUE(std::isnan(v));
  }
}

// gate and up are the column halves of one projection output (plus padding), as a gated MLP's
// gate_up_proj produces them; also separate tensors, a scaled gate, and y written over gate or up.
TEST(OpsGatedActivation, MatchesReference) {
  Rng rng(22);
  const test::ScopedThreads threads(3);  // the largest shape is spread over threads
  for (Activation act : kAll) {
    for (auto [rows, width] : {std::pair<int64_t, int64_t>{1, 3}, {9, 37}, {130, 19}, {257, 131}}) {
      for (float scale : {1.0f, 0.6f}) {
        for (int mode = 0; mode < 4; ++mode) {  // 0: separate tensors, 1: one projection, 2: y = gate, 3: y = up
          SCOPED_TRACE(::testing::Message() << ops::activation_name(act) << " " << rows << "x" << width << " scale "
                                            << scale << " mode " << mode);
          Tensor gate, up;
          if (mode == 0) {
            gate = test::random_tensor({rows, width}, rng, -5, 5);
            up = test::random_tensor({rows, width}, rng, -2, 2, /*strided=*/true);
          } else {
            const Tensor projection = test::random_tensor({rows, 2 * width + 5}, rng, -5, 5);
            gate = projection.slice(1, 1, width);
            up = projection.slice(1, width + 3, width);
          }
          const test::Vec want = ref::gated_activation(act, test::to_vec(gate), test::to_vec(up), scale);
          Tensor y = mode == 2 ? gate : mode == 3 ? up : test::nan_tensor({rows, width}, /*strided=*/true);
          ops::gated_activation(act, gate, up, scale, y);
          EXPECT_LT(test::max_rel_err(test::to_vec(y), want), 1e-6);
        }
      }
    }
  }
}

TEST(OpsActivation, NamesFollowTransformers) {
  const std::pair<const char*, Activation> names[] = {
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
  };
  for (const auto& [name, act] : names) EXPECT_EQ(ops::activation_from_name(name), act) << name;
  for (Activation act : kAll) EXPECT_EQ(ops::activation_from_name(ops::activation_name(act)), act);
  EXPECT_EQ(ops::activation_name(Activation::GeluTanh), "gelu_pytorch_tanh");
}

TEST(OpsActivation, RejectsUnknownNames) {
  for (const char* name : {"relu", "SiLU", "quick_gelu", "", "gelu "})
    test::expect_error([&] { ops::activation_from_name(name); },
                       {"unsupported activation \"" + std::string(name) + "\"", "silu", "relu2"});
}

TEST(OpsActivation, RejectsMismatchedShapes) {
  const Tensor x = Tensor::zeros({3, 8});
  Tensor y = Tensor::empty({3, 7});
  test::expect_error([&] { ops::activation(Activation::Silu, x, y); }, {"activation silu", "[3, 8]", "[3, 7]"});
  const Tensor up = Tensor::zeros({3, 8}, DType::BF16);
  Tensor y_ok = Tensor::empty({3, 8});
  test::expect_error([&] { ops::gated_activation(Activation::Gelu, x, up, 1.0f, y_ok); },
                     {"gated_activation gelu", "BF16"});
}

}  // namespace
}  // namespace ssm
