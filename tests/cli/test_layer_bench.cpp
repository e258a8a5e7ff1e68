// `ssm bench --suite layers`: every kind of stack it offers builds, prefills and decodes, and its row
// says so with numbers (tiny sizes: this checks the wiring, not the speed).
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "bench/layer_bench.h"

namespace ssm::bench {
namespace {

TEST(LayerBench, EveryKindGivesARowOfMeasurements) {
  LayerBenchOptions o;
  o.d_model = 128;
  o.layers = 1;
  o.prefill_lengths = {40};
  o.contexts = {24};
  o.batches = {1, 3};
  o.decode_tokens = 2;
  const std::string table = layer_bench(o);
  for (const std::string& kind : o.kinds) {
    SCOPED_TRACE(kind);
    const std::string row = "| 1 x " + kind + " (d 128) | ";
    const size_t at = table.find(row);
    ASSERT_NE(at, std::string::npos) << table;
    std::istringstream line(table.substr(at + row.size(), table.find('\n', at) - at - row.size()));
    double prefill_tokens_per_second = 0;
    line >> prefill_tokens_per_second;
    EXPECT_GT(prefill_tokens_per_second, 0) << table;
  }
}

}  // namespace
}  // namespace ssm::bench
