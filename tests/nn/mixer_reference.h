// Each mixer kind's forward in double precision, built from the ops' references (ops/ref) and the
// mixer's parameters by name: the oracle the model-level tests hold the float engine to.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "model/config.h"

namespace ssm::testing {

using Vec = std::vector<double>;
using Params = std::map<std::string, Vec>;  // full tensor name → values (row-major)

// Columns [c0, c0 + width) of a row-major [rows, ncols] matrix.
Vec columns(const Vec& m, int64_t rows, int64_t ncols, int64_t c0, int64_t width);

// y [Bt·T, D] = mixer(x [Bt·T, D]) for Bt sequences of T tokens, starting from a zero state.
Vec reference_mixer(const MixerPlan& mixer, const Params& P, const Vec& x, int64_t Bt, int64_t T);

}  // namespace ssm::testing
