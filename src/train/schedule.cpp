#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace ssm {

double LrSchedule::lr_at(int64_t step) const {
  if (step < warmup_steps) return peak_lr * double(step + 1) / double(warmup_steps);
  const int64_t decay_steps = decay_end - warmup_steps;
  if (decay_steps <= 0) return peak_lr;
  if (step >= decay_end) return min_lr;
  const double progress = double(step - warmup_steps) / double(decay_steps);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return min_lr + (peak_lr - min_lr) * cosine;
}

}  // namespace ssm
