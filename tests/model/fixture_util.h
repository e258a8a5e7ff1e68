// Paths of the Hugging Face reference fixtures committed under tests/fixtures/hf.
#pragma once
#include <gtest/gtest.h>

#include <string>

inline std::string fixture_dir(const std::string& name) { return std::string(SSM_TEST_DATA_DIR) + "/hf/" + name; }

namespace ssm {
// The model-level parity tests of tests/model/test_hf_fixtures.cpp, one instance per fixture folder
// name; a file may instantiate them for folders of its own (tests/pending/).
class HfFixture : public ::testing::TestWithParam<std::string> {};
}  // namespace ssm
