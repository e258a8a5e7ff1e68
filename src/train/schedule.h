// Learning-rate schedule: linear warmup to the peak over warmup_steps, then a cosine decay to min_lr
// at decay_end (and min_lr after); decay_end <= warmup_steps keeps the peak after the warmup.
// Steps count from 0; the learning rate of step s is lr_at(s). The trainer does not tie decay_end to
// --steps by default, so that a run extended with --resume follows the curve of one long run.
#pragma once
#include <cstdint>

namespace ssm {

struct LrSchedule {
  double peak_lr = 1e-3;
  double min_lr = 1e-4;
  int64_t warmup_steps = 0;
  int64_t decay_end = 0;

  double lr_at(int64_t step) const;
};

}  // namespace ssm
