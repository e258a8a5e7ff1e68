// Paths of the Hugging Face reference fixtures committed under tests/fixtures/hf.
#pragma once
#include <string>

inline std::string fixture_dir(const std::string& name) { return std::string(SSM_TEST_DATA_DIR) + "/hf/" + name; }
