// The workspace's plan: the first call at a shape spills, and the block that replaces its spills holds
// exactly the most bytes its tensors took at once — also when the call released in its middle and
// the spill blocks left gaps — so that the next call of the same shape allocates nothing.
#include <gtest/gtest.h>

#include <vector>

#include "core/workspace.h"

namespace ssm {
namespace {

constexpr int64_t kUnit = 16384;  // floats: 64 KiB, the smallest spill block
constexpr size_t kUnitBytes = size_t(kUnit) * 4;

// One "step": a kept tensor per layer, each layer's temporaries taken and released in its middle
// (the shape of a training forward with recomputation), then a top of temporaries.
std::vector<Tensor> step(Workspace& ws) {
  std::vector<Tensor> live;
  for (int layer = 0; layer < 3; ++layer) {
    live.push_back(ws.take({kUnit}));  // kept: one unit
    const Workspace::Mark mark = ws.mark();
    live.push_back(ws.take({3 * kUnit}));  // temporaries: three units, then two
    live.push_back(ws.take({2 * kUnit}));
    ws.release(mark);
    live.resize(live.size() - 2);
  }
  live.push_back(ws.take({4 * kUnit}));  // the top: four units
  return live;
}

TEST(Workspace, PlansTheBytesTakenAtOnceNotTheSpillsGaps) {
  Workspace ws;
  step(ws);
  // At most 8 units at once (the third layer: three kept + its 3 + 2 temporaries; the top: 3 + 4).
  // The spill blocks span 15 units: each layer's temporaries and the top spill above the blocks
  // before, which are too low or too small for them.
  EXPECT_EQ(ws.high_water(), 8 * kUnitBytes);
  ws.reset();
  EXPECT_EQ(ws.capacity(), 8 * kUnitBytes);
  const int64_t planned = ws.block_allocations();

  // The same step again: it fits the planned block, allocates nothing, and its live tensors do not overlap.
  std::vector<Tensor> live = step(ws);
  EXPECT_EQ(ws.block_allocations(), planned);
  EXPECT_EQ(ws.high_water(), ws.capacity());
  for (size_t i = 0; i < live.size(); ++i)
    for (int64_t j = 0; j < live[i].numel(); ++j) live[i].data<float>()[j] = float(i);
  for (size_t i = 0; i < live.size(); ++i)
    for (int64_t j = 0; j < live[i].numel(); ++j) ASSERT_EQ(live[i].data<float>()[j], float(i)) << i << " " << j;
}

TEST(Workspace, ReleaseAboveTheBytesInUseIsAnError) {
  Workspace ws;
  ws.take({16});
  EXPECT_THROW(ws.release(ws.mark() + 64), Error);
}

}  // namespace
}  // namespace ssm
