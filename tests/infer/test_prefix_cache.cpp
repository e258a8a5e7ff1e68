// The prefix cache: the deepest snapshot of a prefix wins, edges split and merge as a radix tree's
// do, the budget holds with the least recently used evicted; and on the CPU a prefill that starts
// from a snapshot gives a cold prefill's logits bit for bit; prompts prefilled together get what they
// get alone, up to rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/threads.h"
#include "infer/cached_prefill.h"
#include "nn/mixers/conv_ssm_state.h"
#include "model/fixture_util.h"

namespace ssm {
namespace {

Snapshot of_size(int64_t floats, float tag) { return {ModelState(), std::vector<float>(size_t(floats), tag)}; }

using Ids = std::vector<int32_t>;

float tag_of(const PrefixCache::Hit& hit) { return hit.snapshot ? hit.snapshot->logits[0] : -1; }

// The logits of one step of token 7 from row `row` of `state`.
std::vector<float> step_logits(const LanguageModel& model, const ModelState& state, int64_t row) {
  ModelState one = model.new_state(1);
  state.copy_sequence(row, one, 0);
  Tensor ids = Tensor::empty({1}, DType::I32);
  ids.data<int32_t>()[0] = 7;
  const Tensor logits = model.step(ids, one);
  return std::vector<float>(logits.data<float>(), logits.data<float>() + logits.size(1));
}

TEST(PrefixCache, FindsTheDeepestSnapshotOfAPrefix) {
  PrefixCache cache(1 << 20);
  cache.insert(Ids{1, 2, 3, 4}, of_size(1, 4));
  cache.insert(Ids{1, 2}, of_size(1, 2));           // splits the edge
  cache.insert(Ids{1, 2, 9, 9, 9}, of_size(1, 9));  // branches at the split
  EXPECT_EQ(cache.entries(), 3);
  EXPECT_EQ(cache.find(Ids{1, 2, 3, 4, 5}).length, 4);
  EXPECT_EQ(tag_of(cache.find(Ids{1, 2, 3, 4, 5})), 4);
  EXPECT_EQ(cache.find(Ids{1, 2, 3}).length, 2);  // a snapshot must cover whole tokens of the prompt only
  EXPECT_EQ(cache.find(Ids{1, 2, 9, 9, 9}).length, 5);
  EXPECT_EQ(cache.find(Ids{1, 2, 9, 9}).length, 2);
  EXPECT_EQ(cache.find(Ids{1}).snapshot, nullptr);
  EXPECT_EQ(cache.find(Ids{1, 2, 3, 4, 5}, 2).length, 4);
  EXPECT_EQ(cache.find(Ids{1, 2, 9, 9, 9, 0}, 2).length, 2);  // 5 is not a multiple of 2
  EXPECT_EQ(cache.find(Ids{1, 2, 9, 9, 9}, 2).length, 5);     // but is the whole prompt
  EXPECT_EQ(cache.find(Ids{7, 1, 2}).snapshot, nullptr);
  cache.insert(Ids{1, 2}, of_size(1, 22));  // replaces
  EXPECT_EQ(tag_of(cache.find(Ids{1, 2, 3})), 22);
  EXPECT_EQ(cache.entries(), 3);
  EXPECT_EQ(cache.bytes(), 3 * int64_t(sizeof(float)));
}

TEST(PrefixCache, EvictsTheLeastRecentlyUsedWithinTheBudget) {
  PrefixCache cache(10 * sizeof(float));
  cache.insert(Ids{1, 2, 3}, of_size(4, 1));
  cache.insert(Ids{1, 2, 5}, of_size(4, 2));
  EXPECT_EQ(tag_of(cache.find(Ids{1, 2, 3})), 1);  // now {1,2,5} is the least recently used
  cache.insert(Ids{8}, of_size(4, 3));
  EXPECT_EQ(cache.entries(), 2);
  EXPECT_EQ(cache.find(Ids{1, 2, 5}).snapshot, nullptr);
  EXPECT_EQ(tag_of(cache.find(Ids{1, 2, 3})), 1);
  EXPECT_EQ(tag_of(cache.find(Ids{8})), 3);
  EXPECT_LE(cache.bytes(), 10 * int64_t(sizeof(float)));
  cache.insert(Ids{9}, of_size(11, 4));  // larger than the whole budget: not kept, nothing evicted
  EXPECT_EQ(cache.entries(), 2);
  // Evicting down to one branch leaves a path that still finds what remains.
  cache.insert(Ids{1, 2, 3, 4}, of_size(9, 5));
  EXPECT_EQ(cache.entries(), 1);
  EXPECT_EQ(cache.find(Ids{1, 2, 3, 4, 0}).length, 4);
  EXPECT_EQ(cache.find(Ids{1, 2, 3}).snapshot, nullptr);
}

// The state of an evicted or replaced snapshot is kept (one) for the next snapshot to reuse; a KV
// cache's is not (its length would carry over into the copy).
TEST(PrefixCache, KeepsTheLastEvictedStateForTheNextSnapshot) {
  const LanguageModel model = LanguageModel::load(fixture_dir("mamba2_tiny"));
  const auto snapshot = [&] { return Snapshot{model.new_state(1), {0.0f}}; };
  const auto address = [](const ModelState& state) { return state.mixers.at(0) ? (const void*)state.mixers[0].get() : nullptr; };
  const int64_t size = snapshot().bytes();
  PrefixCache cache(2 * size);
  EXPECT_TRUE(cache.take_spare().mixers.empty());
  Snapshot first = snapshot();
  const void* first_state = address(first.state);
  cache.insert(Ids{1}, std::move(first));
  cache.insert(Ids{2}, snapshot());
  EXPECT_TRUE(cache.take_spare().mixers.empty());  // nothing evicted yet
  cache.insert(Ids{3}, snapshot());                // evicts {1}
  EXPECT_EQ(cache.entries(), 2);
  ModelState spare = cache.take_spare();
  EXPECT_EQ(address(spare), first_state);
  EXPECT_EQ(spare.batch, 1);
  EXPECT_TRUE(cache.take_spare().mixers.empty());  // taken
  Snapshot again = snapshot();
  const void* replaced = address(cache.find(Ids{3}).snapshot->state);
  cache.insert(Ids{3}, std::move(again));  // replaces {3}'s snapshot
  EXPECT_EQ(address(cache.take_spare()), replaced);

  const LanguageModel bamba = LanguageModel::load(fixture_dir("bamba_tiny"));
  PrefixCache small(Snapshot{bamba.new_state(1), {}}.bytes());
  small.insert(Ids{1}, Snapshot{bamba.new_state(1), {}});
  small.insert(Ids{2}, Snapshot{bamba.new_state(1), {}});  // evicts {1}: a KV cache, not kept
  EXPECT_EQ(small.entries(), 1);
  EXPECT_TRUE(small.take_spare().mixers.empty());
}

class CachedPrefillTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CachedPrefillTest, AHitGivesTheColdLogitsBitForBit) {
  const LanguageModel model = LanguageModel::load(fixture_dir(GetParam()));
  Ids prompt;
  for (int i = 0; i < 45; ++i) prompt.push_back(int32_t((i * 37 + 11) % 500));
  const int64_t chunk = 16;
  PrefixCache cache(64 << 20);
  CachedPrefill warm(model, &cache, chunk), cold(model, nullptr, chunk);
  // First the prompt's first 20 tokens (snapshots at 16 and 20), then prompts that extend them:
  // each resumes from the deepest chunk end or from its own whole prompt.
  const Ids first20(prompt.begin(), prompt.begin() + 20);
  EXPECT_EQ(warm.run(first20).cached_tokens, 0);
  for (auto [length, cached] : {std::pair{20, 20}, {21, 16}, {32, 16}, {45, 32}, {33, 32}}) {
    const Ids p(prompt.begin(), prompt.begin() + length);
    const auto hit = warm.run(p);
    EXPECT_EQ(hit.cached_tokens, cached) << length;
    EXPECT_EQ(hit.logits, cold.run(p).logits) << length << " tokens, " << hit.cached_tokens << " from the cache";
  }
  EXPECT_EQ(warm.run(prompt).cached_tokens, 45);
  // A chunk at a time: from the snapshot at 32, chunks to 48 and 50.
  Ids longer = prompt;
  longer.insert(longer.end(), {7, 8, 9, 10, 11});
  auto progress = warm.start(longer);
  EXPECT_EQ(progress.done, 32);
  EXPECT_FALSE(warm.advance(longer, progress));
  EXPECT_EQ(progress.done, 48);
  EXPECT_TRUE(warm.advance(longer, progress));
  EXPECT_EQ(progress.done, 50);
  EXPECT_EQ(progress.logits, cold.run(longer).logits);
}

// Under a budget of three snapshots, so that every snapshot after the first few is copied into an
// evicted one's state: hits still give the cold logits bit for bit.
TEST_P(CachedPrefillTest, HitsStayExactWhileSnapshotsReuseEvictedStates) {
  const LanguageModel model = LanguageModel::load(fixture_dir(GetParam()));
  const int64_t chunk = 8;
  PrefixCache cache(3 * Snapshot{model.new_state(1), std::vector<float>(size_t(model.config().vocab_size))}.bytes());
  CachedPrefill warm(model, &cache, chunk), cold(model, nullptr, chunk);
  Ids longest;
  for (int i = 0; i < 40; ++i) longest.push_back(int32_t((i * 37 + 11) % 500));
  int64_t hits = 0;
  for (int length : {12, 20, 28, 36, 20, 40, 5, 33}) {
    const Ids prompt(longest.begin(), longest.begin() + length);
    const auto got = warm.run(prompt);
    hits += got.cached_tokens > 0;
    EXPECT_EQ(got.logits, cold.run(prompt).logits) << length << " tokens, " << got.cached_tokens << " cached";
  }
  EXPECT_GE(hits, 4);
  EXPECT_LE(cache.entries(), 3);
}

// Prompts prefilled together, in forwards of several rows, each get what they get alone up to
// rounding, on one thread and on two: the same next token, and logits within 1e-5. Not bit for bit:
// ops::linear picks its kernel and the GEMM its blocking by the number of rows (k prompts · chunk), so
// a row's sums run in another order beside other rows (as a decode step's do past 48 rows already);
// the other ops of these models give a row the same bits whatever the batch (checked while writing
// this with the streaming kernel forced for every size: then the logits were equal bit for bit).
TEST_P(CachedPrefillTest, PromptsTogetherGetTheirLogitsAloneUpToRounding) {
  const LanguageModel model = LanguageModel::load(fixture_dir(GetParam()));
  const auto prompt_of = [](int length, int salt) {
    Ids ids;
    for (int i = 0; i < length; ++i) ids.push_back(int32_t((i * 37 + salt * 101 + 11) % 500));
    return ids;
  };
  const Ids shared = prompt_of(40, 9);
  const std::vector<Ids> prompts = {prompt_of(20, 1), prompt_of(20, 2), prompt_of(20, 3), prompt_of(37, 4),
                                    prompt_of(5, 5),  shared,           prompt_of(16, 6)};
  const int64_t chunk = 16;
  const int threads_before = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    PrefixCache cache(64 << 20);
    CachedPrefill together(model, &cache, chunk), alone(model, nullptr, chunk);
    together.run(Ids(shared.begin(), shared.begin() + 20));  // `shared` then resumes at 16
    std::vector<CachedPrefill::Result> progress;
    std::vector<CachedPrefill::Prefilling> batch;
    for (const Ids& p : prompts) progress.push_back(together.start(p));
    for (size_t i = 0; i < prompts.size(); ++i) batch.push_back({prompts[i], &progress[i]});
    EXPECT_EQ(progress[5].done, 16);
    // First chunks: 16 tokens for all but the 5-token prompt; `shared`'s starts at 16, the others' at 0,
    // which a model with a KV cache runs apart.
    const bool same_position = !model.new_state(1).resizable();
    EXPECT_EQ(together.advance(batch), same_position ? 3 : 2);
    int64_t forwards = 0;
    while (std::any_of(batch.begin(), batch.end(),
                       [](const auto& p) { return p.progress->done < int64_t(p.prompt.size()); }))
      forwards += together.advance(batch);
    // Then 4 tokens for the 20-token prompts together, 16 for the 37-token one and 8 for `shared`;
    // then the 37-token one's last 5.
    EXPECT_EQ(forwards, 4);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const std::vector<float> want = alone.run(prompts[i]).logits, &got = progress[i].logits;
      ASSERT_EQ(got.size(), want.size());
      float worst = 0;
      for (size_t v = 0; v < got.size(); ++v) worst = std::max(worst, std::abs(got[v] - want[v]));
      EXPECT_LE(worst, 1e-5f) << "prompt " << i << ", " << threads << " threads";
      EXPECT_EQ(std::max_element(got.begin(), got.end()) - got.begin(),
                std::max_element(want.begin(), want.end()) - want.begin())
          << "prompt " << i << ", " << threads << " threads";
    }
  }
  set_num_threads(threads_before);
}

// Prompts handed over from the forward's rows (as the server takes them into its decode batch): each
// once, when its last chunk has run, keeping no state of its own; the row holds what the prompt's
// lone run leaves in its state, up to rounding (one step from both gives the same logits within
// 1e-4). Three rounds on one CachedPrefill, so that prompts that start blank land on rows that held
// other prompts' states; a cache hit and a prompt of three chunks among them.
TEST_P(CachedPrefillTest, PromptsAllInAreHandedOverFromTheRowsAsAlone) {
  const LanguageModel model = LanguageModel::load(fixture_dir(GetParam()));
  const int64_t chunk = 16;
  PrefixCache cache(64 << 20);
  CachedPrefill together(model, &cache, chunk), alone(model, nullptr, chunk);
  const auto worst = [](const std::vector<float>& a, const std::vector<float>& b) {
    float w = 0;
    for (size_t v = 0; v < a.size(); ++v) w = std::max(w, std::abs(a[v] - b[v]));
    return w;
  };
  for (int round = 0; round < 3; ++round) {
    std::vector<Ids> prompts;
    for (int p = 0; p < 4; ++p) {
      Ids ids;
      for (int i = 0; i < 12 + p % 2 * 8; ++i) ids.push_back(int32_t((i * 37 + round * 211 + p * 101 + 11) % 500));
      prompts.push_back(ids);
    }
    prompts.push_back(Ids(prompts[1].begin(), prompts[1].end()));  // starts from prompts[1]'s snapshot at 16...
    prompts.back().push_back(3);                                    // ...after prompts[1] ran (below)
    Ids long_prompt;
    for (int i = 0; i < 40; ++i) long_prompt.push_back(int32_t((i * 13 + round * 7 + 5) % 500));
    prompts.push_back(long_prompt);
    together.run(Ids(prompts[1].begin(), prompts[1].begin() + 16));
    std::vector<CachedPrefill::Result> progress;
    std::vector<CachedPrefill::Prefilling> batch;
    for (const Ids& p : prompts) progress.push_back(together.start(p));
    for (size_t i = 0; i < prompts.size(); ++i) batch.push_back({prompts[i], &progress[i]});
    EXPECT_EQ(progress[4].cached_tokens, 16);
    std::vector<int> handed(prompts.size(), 0);
    std::vector<std::vector<float>> after(prompts.size());
    int64_t advances = 0;
    while (std::any_of(batch.begin(), batch.end(),
                       [](const auto& p) { return p.progress->done < int64_t(p.prompt.size()); })) {
      together.advance(batch, [&](size_t i, const ModelState& rows, int64_t row) {
        ++handed[i];
        EXPECT_EQ(progress[i].done, int64_t(prompts[i].size())) << "prompt " << i << " handed over before its end";
        after[i] = step_logits(model, rows, row);
      });
      ASSERT_LT(++advances, 10);
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(handed[i], 1) << "round " << round << ", prompt " << i;
      EXPECT_TRUE(progress[i].state.mixers.empty()) << "round " << round << ", prompt " << i;
      const CachedPrefill::Result want = alone.run(prompts[i]);
      EXPECT_LE(worst(progress[i].logits, want.logits), 1e-5f) << "round " << round << ", prompt " << i;
      ASSERT_EQ(after[i].size(), size_t(model.config().vocab_size));
      EXPECT_LE(worst(after[i], step_logits(model, want.state, 0)), 1e-4f) << "round " << round << ", prompt " << i;
    }
  }
}

// Hits one after another, each prompt handed over when all in (as a server runs them): each hit
// copies its snapshot into the state the hit before it left (for states that resize in place), and
// still gives a cold run's logits, and a state a step from which gives the cold state's logits, bit for bit.
TEST_P(CachedPrefillTest, HitsOneAfterAnotherReuseTheStateHandedOverAndStayExact) {
  const LanguageModel model = LanguageModel::load(fixture_dir(GetParam()));
  PrefixCache cache(64 << 20);
  CachedPrefill warm(model, &cache, 16), cold(model, nullptr, 16);
  const auto memory_of = [](const ModelState& state) {  // the first layer's recurrent state's bytes
    const auto* conv_ssm = dynamic_cast<const ConvSsmState*>(state.mixers.front().get());
    return conv_ssm ? conv_ssm->ssm.raw() : nullptr;
  };
  Ids prefix;
  for (int i = 0; i < 32; ++i) prefix.push_back(int32_t((i * 37 + 11) % 500));
  warm.run(prefix);
  const void* left_behind = nullptr;
  std::vector<ModelState> held;
  for (int suffix = 1; suffix <= 4; ++suffix) {
    Ids prompt = prefix;
    for (int i = 0; i < suffix * 3; ++i) prompt.push_back(int32_t((suffix * 53 + i * 7) % 500));
    CachedPrefill::Result progress = warm.start(prompt);
    ASSERT_EQ(progress.cached_tokens, 32) << suffix;
    const void* state = memory_of(progress.state);
    if (left_behind && model.new_state(1).resizable()) {  // (a KV cache is not reused)
      EXPECT_EQ(state, left_behind) << suffix;
    }
    std::vector<float> after;
    const CachedPrefill::Prefilling one{prompt, &progress};
    warm.advance(std::span(&one, 1), [&](size_t, const ModelState& rows, int64_t row) {
      after = step_logits(model, rows, row);
      left_behind = memory_of(rows);
    });
    const CachedPrefill::Result want = cold.run(prompt);
    EXPECT_EQ(progress.logits, want.logits) << suffix;
    EXPECT_EQ(after, step_logits(model, want.state, 0)) << suffix;
    EXPECT_TRUE(progress.state.mixers.empty()) << suffix;
    held.push_back(model.new_state(1));  // would take the state's memory, were it freed
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CachedPrefillTest, ::testing::Values("mamba2_tiny", "bamba_tiny", "mamba_tiny", "xlstm_tiny"));

}  // namespace
}  // namespace ssm
