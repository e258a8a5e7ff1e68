#include "serve/api_error.h"

namespace ssm::serve {

nlohmann::json ApiError::body() const {
  const auto or_null = [](const std::string& s) { return s.empty() ? nlohmann::json() : nlohmann::json(s); };
  return {{"error", {{"message", what()}, {"type", type}, {"param", or_null(param)}, {"code", or_null(code)}}}};
}

}  // namespace ssm::serve
