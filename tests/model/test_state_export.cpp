// A sequence's state exported as named host tensors and imported into another state goes on exactly
// as a copy of it does, for every kind of state: Mamba-1/2 conv + SSM, full and sliding-window KV
// caches, RAT's chunk cache, the mLSTM's matrix memory, the sLSTM's conv and (c, n, m, h), Mamba-3's (angle, ssm,
// k, x); and an import that does not fit is one error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/random.h"
#include "core/threads.h"
#include "fixture_util.h"
#include "model/language_model.h"
#include "nn/mixers/conv_ssm_state.h"
#include "train/init.h"

namespace ssm {
namespace {

Tensor ids_of(const std::vector<int32_t>& values, Shape shape) {
  Tensor t = Tensor::empty(shape, DType::I32);
  std::memcpy(t.data<int32_t>(), values.data(), values.size() * sizeof(int32_t));
  return t;
}

StateTensorMap as_map(const StateTensors& tensors) { return StateTensorMap(tensors.begin(), tensors.end()); }

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.contiguous().raw(), b.contiguous().raw(), a.nbytes()) == 0;
}

// Prefills two sequences of 13 tokens (past an RAT chunk and a sliding window), moves sequence 1 into a
// batch-1 state by export/import and by copy_sequence, then decodes three tokens from each.
void expect_round_trip(const LanguageModel& model) {
  const int64_t vocab = model.config().vocab_size, length = 13;
  Rng rng(5);
  std::vector<int32_t> prompt(size_t(2 * length));
  for (int32_t& id : prompt) id = int32_t(rng.below(uint64_t(vocab)));
  ModelState state = model.new_state(2);
  model.forward(ids_of(prompt, {2, length}), &state, false);

  const StateTensors exported = state.export_sequence(1);
  ASSERT_FALSE(exported.empty());
  for (const auto& [name, tensor] : exported) EXPECT_EQ(tensor.device(), Device::CPU) << name;
  ModelState imported = model.new_state(1), copied = model.new_state(1), fresh = model.new_state(1);
  imported.import_sequence(0, as_map(exported));
  state.copy_sequence(1, copied, 0);
  // A state left unset for copies, poisoned with NaN first (a part the copy missed would show).
  ModelState unset = model.unset_state(state, 1);
  StateTensors poison = unset.export_sequence(0);
  for (auto& [name, tensor] : poison)
    if (tensor.dtype() == DType::F32) std::fill_n(tensor.data<float>(), tensor.numel(), std::nanf(""));
  unset.import_sequence(0, as_map(poison));
  state.copy_sequence(1, unset, 0);
  for (int32_t token : {3, 1, 4}) {
    const Tensor id = ids_of({token % int32_t(vocab)}, {1});
    const Tensor from_import = model.step(id, imported), from_copy = model.step(id, copied);
    EXPECT_TRUE(same_bits(from_import, from_copy)) << "token " << token;
    EXPECT_TRUE(same_bits(model.step(id, unset), from_copy)) << "token " << token;
    EXPECT_FALSE(same_bits(from_import, model.step(id, fresh)));  // the state mattered
  }
}

TEST(StateExport, UnsetStatesOfTheMambasShareAAndHaveTheBatchAsked) {
  for (const char* name : {"mamba_tiny", "mamba2_tiny"}) {
    SCOPED_TRACE(name);
    const LanguageModel model = LanguageModel::load(fixture_dir(name));
    const ModelState like = model.new_state(2);
    const ModelState unset = model.unset_state(like, 3);
    EXPECT_EQ(unset.batch, 3);
    ASSERT_EQ(unset.mixers.size(), like.mixers.size());
    for (size_t i = 0; i < like.mixers.size(); ++i) {
      const auto* from = dynamic_cast<const ConvSsmState*>(like.mixers[i].get());
      const auto* made = dynamic_cast<const ConvSsmState*>(unset.mixers[i].get());
      ASSERT_TRUE(from && made) << "mixer " << i;
      EXPECT_EQ(made->A.storage(), from->A.storage());
      EXPECT_EQ(made->conv.size(0), 3);
      EXPECT_EQ(made->ssm.size(0), 3);
      EXPECT_EQ(made->ssm.shape()[1], from->ssm.shape()[1]);
    }
  }
}

TEST(StateExport, EveryKindOfStateRoundTrips) {
  for (const char* name : {"mamba_tiny", "mamba2_tiny", "bamba_tiny", "jamba_tiny", "xlstm_tiny", "mamba3_groups",
                           "mamba3_mimo"}) {
    SCOPED_TRACE(name);
    expect_round_trip(LanguageModel::load(fixture_dir(name)));
  }
  // RAT (chunks of 4) and sliding-window attention (a window of 5) in a model of the project's own type.
  LanguageModel rat(
      ModelConfig::from_json({{"model_type", "ssm"},
                              {"vocab_size", 37},
                              {"hidden_size", 24},
                              {"layers", {"rat+mlp", "swa+mlp"}},
                              {"rat", {{"num_heads", 3}, {"head_dim", 8}, {"qk_groups", 3}, {"chunk_size", 4}}},
                              {"swa", {{"num_attention_heads", 2}, {"head_dim", 12}, {"sliding_window", 5}}},
                              {"mlp", {{"intermediate_size", 40}}}},
                             "test config"));
  init_parameters(rat, 9);
  SCOPED_TRACE("rat + swa");
  expect_round_trip(rat);
  LanguageModel xlstm(ModelConfig::from_json({{"model_type", "ssm"},
                                              {"vocab_size", 37},
                                              {"hidden_size", 24},
                                              {"layers", {"slstm+mlp", "mlstm"}},
                                              {"slstm", {{"num_heads", 2}, {"recurrent_weight_init", "standard"}}},
                                              {"mlstm", {{"num_heads", 2}}},
                                              {"mlp", {{"intermediate_size", 40}}}},
                                             "test config"));
  init_parameters(xlstm, 11);
  SCOPED_TRACE("slstm + mlstm");
  expect_round_trip(xlstm);
}

TEST(StateExport, AnImportThatDoesNotFitIsAnError) {
  const LanguageModel mamba2 = LanguageModel::load(fixture_dir("mamba2_tiny"));
  const LanguageModel bamba = LanguageModel::load(fixture_dir("bamba_tiny"));
  const StateTensorMap good = as_map(mamba2.new_state(1).export_sequence(0));
  ModelState target = mamba2.new_state(1);
  // Another model's state.
  EXPECT_THROW(target.import_sequence(0, as_map(bamba.new_state(1).export_sequence(0))), Error);
  // A tensor missing, one of the wrong shape or dtype, a name this model has no place for.
  StateTensorMap missing = good;
  missing.erase(missing.begin());
  EXPECT_THROW(target.import_sequence(0, missing), Error);
  StateTensorMap reshaped = good;
  reshaped.begin()->second = Tensor::zeros({1, 2, 3});
  EXPECT_THROW(target.import_sequence(0, reshaped), Error);
  StateTensorMap retyped = good;
  retyped.begin()->second = retyped.begin()->second.to(DType::BF16);
  EXPECT_THROW(target.import_sequence(0, retyped), Error);
  for (const char* extra : {"mixer.99.conv", "mixer.x.conv", "mixer.0", "other"}) {
    StateTensorMap more = good;
    more.emplace(extra, Tensor::zeros({1}));
    EXPECT_THROW(target.import_sequence(0, more), Error) << extra;
  }
  EXPECT_NO_THROW(target.import_sequence(0, good));
}

// copy_sequence copies the mixers on the threads (on the CPU): the same bits as one by one, and a
// state of another model (here Mamba-1's states into Mamba-2's, as many mixers) is one clear error,
// not an exception escaping a parallel region.
TEST(StateCopy, OnTheThreadsAsOneByOneAndAForeignStateIsOneError) {
  const LanguageModel mamba2 = LanguageModel::load(fixture_dir("mamba2_tiny"));
  const LanguageModel mamba = LanguageModel::load(fixture_dir("mamba_tiny"));
  const int threads_before = num_threads();
  ModelState source = mamba2.new_state(3);
  mamba2.forward(ids_of({5, 9, 2, 7, 11, 3, 8, 1, 4}, {3, 3}), &source, false);
  for (int threads : {1, 2, 4}) {
    set_num_threads(threads);
    ModelState copied = mamba2.new_state(2);
    source.copy_sequence(2, copied, 1);
    const StateTensors want = source.export_sequence(2), got = copied.export_sequence(1);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(same_bits(got[i].second, want[i].second)) << got[i].first;
    ModelState foreign = mamba.new_state(1);
    ASSERT_EQ(foreign.mixers.size(), source.mixers.size());
    EXPECT_THROW(source.copy_sequence(0, foreign, 0), Error) << threads << " threads";
  }
  set_num_threads(threads_before);
}

}  // namespace
}  // namespace ssm
