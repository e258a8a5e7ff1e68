// Errors as OpenAI's API reports them: an HTTP status and
// {"error": {"message", "type", "param", "code"}}, so that clients written for it show them as such.
#pragma once
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace ssm::serve {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = {}, std::string code = {},
           std::string type = "invalid_request_error")
      : std::runtime_error(std::move(message)),
        status(status),
        param(std::move(param)),
        code(std::move(code)),
        type(std::move(type)) {}

  nlohmann::json body() const;  // the error object; empty param or code become null

  int status;
  std::string param, code, type;
};

// A 400 about request field `param`.
template <class... Args>
[[noreturn]] void bad_field(const std::string& param, fmt::format_string<Args...> format, Args&&... args) {
  throw ApiError(400, fmt::format(format, std::forward<Args>(args)...), param);
}

}  // namespace ssm::serve
