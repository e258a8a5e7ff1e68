// The transformers `xlstm` fixture (tests/fixtures/hf/xlstm_tiny, made by
// `python3 scripts/make-hf-fixtures.py --out tests/fixtures/hf xlstm_tiny`): logits within
// max|Δ|/max|ref| < 1e-4, identical greedy ids, step = forward (the tests of test_hf_fixtures.cpp).
// It fails while the folder is missing; move this file to tests/model/ when the fixture lands.
#include "model/fixture_util.h"

namespace ssm {

INSTANTIATE_TEST_SUITE_P(Xlstm, HfFixture, ::testing::Values("xlstm_tiny"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace ssm
