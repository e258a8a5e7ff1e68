// A small, fast, reproducible generator (xoshiro256**, seeded through splitmix64): the same seed
// gives the same numbers on every machine, which std::normal_distribution does not promise.
#pragma once
#include <cstdint>

namespace ssm {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0);
  uint64_t next_u64();
  float uniform();                      // [0, 1)
  float uniform(float low, float high);  // [low, high)
  float normal();                       // mean 0, standard deviation 1 (Box-Muller)
  uint64_t below(uint64_t bound);       // [0, bound)

 private:
  uint64_t state_[4];
  float spare_normal_ = 0.0f;
  bool has_spare_ = false;
};

}  // namespace ssm
