// A PNG loss curve (libpng): training loss per step (light) with its running mean (dark), and
// validation loss points joined by a line; axes with labelled ranges.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace ssm {

struct LossCurve {
  std::vector<std::pair<double, double>> train;  // (step, loss)
  std::vector<std::pair<double, double>> val;    // (step, loss)
};

// Writes `path` atomically; throws ssm::Error when it cannot.
void write_loss_plot(const std::string& path, const LossCurve& curve, int width = 900, int height = 540);

}  // namespace ssm
