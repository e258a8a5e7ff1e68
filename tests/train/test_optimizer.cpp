// AdamW against a double-precision transcription of its update, state save/load, gradient
// clipping, and the learning-rate schedule.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/error.h"
#include "core/random.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace ssm {
namespace {

TEST(TrainOptimizer, AdamWMatchesDoubleTranscription) {
  Rng rng(4);
  Tensor w = Tensor::empty({3, 4}), b = Tensor::empty({4});
  Tensor gw = Tensor::empty({3, 4}), gb = Tensor::empty({4});
  for (Tensor* t : {&w, &b})
    for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] = rng.normal();
  const AdamWOptions opt{0.9, 0.95, 1e-8, 0.1};
  AdamW adam({{"w", &w, &gw, true}, {"b", &b, &gb, false}}, opt);
  std::vector<double> wd(w.data<float>(), w.data<float>() + 12), bd(b.data<float>(), b.data<float>() + 4);
  std::vector<double> mw(12, 0), vw(12, 0), mb(4, 0), vb(4, 0);
  for (int step = 1; step <= 5; ++step) {
    const double lr = 0.01 * step;
    for (Tensor* t : {&gw, &gb})
      for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] = rng.normal();
    adam.step(lr);
    auto ref = [&](std::vector<double>& p, std::vector<double>& m, std::vector<double>& v, const Tensor& g,
                   bool decay) {
      for (size_t i = 0; i < p.size(); ++i) {
        const double gi = g.data<float>()[i];
        m[i] = 0.9 * m[i] + 0.1 * gi;
        v[i] = 0.95 * v[i] + 0.05 * gi * gi;
        const double mh = m[i] / (1 - std::pow(0.9, step)), vh = v[i] / (1 - std::pow(0.95, step));
        if (decay) p[i] *= 1 - lr * 0.1;
        p[i] -= lr * mh / (std::sqrt(vh) + 1e-8);
      }
    };
    ref(wd, mw, vw, gw, true);
    ref(bd, mb, vb, gb, false);
  }
  EXPECT_EQ(adam.steps(), 5);
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(w.data<float>()[i], wd[size_t(i)], 1e-5);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(b.data<float>()[i], bd[size_t(i)], 1e-5);
}

// Mixed precision: after each update the shadow holds the new weights rounded to BF16.
TEST(TrainOptimizer, ShadowCopyHoldsTheUpdatedWeightsInBf16) {
  Rng rng(5);
  Tensor w = Tensor::empty({7, 3}), g = Tensor::empty({7, 3}), shadow = Tensor::empty({7, 3}, DType::BF16);
  for (Tensor* t : {&w, &g})
    for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] = rng.normal();
  AdamW adam({{"w", &w, &g, true, &shadow}}, {});
  for (int step = 0; step < 3; ++step) {
    adam.step(0.01);
    const Tensor want = w.to(DType::BF16);
    for (int64_t i = 0; i < w.numel(); ++i)
      EXPECT_EQ(shadow.data<uint16_t>()[i], want.data<uint16_t>()[i]) << "element " << i << ", step " << step;
  }
  Tensor bad = Tensor::empty({7, 3});
  EXPECT_THROW(AdamW({{"w", &w, &g, true, &bad}}, {}).step(0.01), Error);  // an F32 "copy"
}

TEST(TrainOptimizer, StateRoundTripContinuesIdentically) {
  Rng rng(8);
  auto init = [](Tensor& t, float v) {
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = v * float(i + 1);
  };
  Tensor w1 = Tensor::empty({5}), g1 = Tensor::empty({5}), w2 = Tensor::empty({5}), g2 = Tensor::empty({5});
  init(w1, 0.3f);
  AdamW a({{"w", &w1, &g1, true}}, {});
  for (int s = 0; s < 3; ++s) {
    init(g1, float(s) - 1.3f);
    a.step(0.01);
  }
  std::map<std::string, Tensor> saved;
  for (auto& [name, t] : a.state_tensors()) saved[name] = t.clone();
  w2.copy_from(w1);
  AdamW b({{"w", &w2, &g2, true}}, {});
  b.load_state(saved, a.steps(), "test");
  init(g1, 0.7f);
  init(g2, 0.7f);
  a.step(0.02);
  b.step(0.02);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(w1.data<float>()[i], w2.data<float>()[i]);
  saved.erase("w.exp_avg");
  EXPECT_THROW(b.load_state(saved, 1, "test"), Error);
}

TEST(TrainOptimizer, ClipByGlobalNorm) {
  Tensor a = Tensor::empty({2}), b = Tensor::empty({1});
  a.data<float>()[0] = 3;
  a.data<float>()[1] = 0;
  b.data<float>()[0] = 4;
  EXPECT_NEAR(grad_norm({&a, &b}), 5.0, 1e-12);
  EXPECT_EQ(clip_factor(5.0, 10.0), 1.0f);  // below the bound: untouched
  EXPECT_EQ(clip_factor(5.0, 0.0), 1.0f);   // no bound
  EXPECT_EQ(clip_factor(NAN, 1.0), 1.0f);
  EXPECT_FLOAT_EQ(clip_factor(5.0, 1.0), 0.2f);
  zero_grads({&a, &b});
  EXPECT_EQ(grad_norm({&a, &b}), 0.0);
}

// Clipping's factor given to the step updates the weights exactly as gradients scaled beforehand do.
TEST(TrainOptimizer, GradScaleIsTheUpdateOfScaledGradients) {
  Rng rng(6);
  Tensor w1 = Tensor::empty({33}), g1 = Tensor::empty({33});
  for (int64_t i = 0; i < w1.numel(); ++i) w1.data<float>()[i] = rng.normal();
  Tensor w2 = w1.clone(), g2 = Tensor::empty({33});
  AdamW scaled_inside({{"w", &w1, &g1, true}}, {}), scaled_before({{"w", &w2, &g2, true}}, {});
  const float factor = clip_factor(7.5, 1.0);
  for (int step = 0; step < 3; ++step) {
    for (int64_t i = 0; i < g1.numel(); ++i) {
      g1.data<float>()[i] = rng.normal();
      g2.data<float>()[i] = g1.data<float>()[i] * factor;
    }
    scaled_inside.step(0.01, factor);
    scaled_before.step(0.01);
  }
  for (int64_t i = 0; i < w1.numel(); ++i) EXPECT_EQ(w1.data<float>()[i], w2.data<float>()[i]) << i;
}

TEST(TrainSchedule, WarmupThenCosine) {
  const LrSchedule s{1.0, 0.1, 10, 110};
  EXPECT_NEAR(s.lr_at(0), 0.1, 1e-12);
  EXPECT_NEAR(s.lr_at(9), 1.0, 1e-12);
  EXPECT_NEAR(s.lr_at(10), 1.0, 1e-12);
  EXPECT_NEAR(s.lr_at(60), 0.55, 1e-12);
  EXPECT_NEAR(s.lr_at(110), 0.1, 1e-12);
  EXPECT_NEAR(s.lr_at(500), 0.1, 1e-12);
  for (int64_t i = 10; i < 110; ++i) EXPECT_LE(s.lr_at(i + 1), s.lr_at(i) + 1e-15);
  const LrSchedule flat{1.0, 0.1, 4, 0};  // no decay
  EXPECT_NEAR(flat.lr_at(1), 0.5, 1e-12);
  EXPECT_EQ(flat.lr_at(4), 1.0);
  EXPECT_EQ(flat.lr_at(100000), 1.0);
}

}  // namespace
}  // namespace ssm
