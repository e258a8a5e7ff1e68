// Runs the ssm binary as a user would, capturing its output and exit status.
#pragma once
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

struct CliResult {
  int exit_code = -1;   // -1 when killed by a signal (a crash)
  std::string output;   // stdout and stderr together
};

inline CliResult run_ssm(const std::string& arguments) {
  CliResult result;
  const std::string command = std::string(SSM_BINARY) + " " + arguments + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  const int status = pclose(pipe);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}
