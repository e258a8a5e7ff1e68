// Random Mamba-3 inputs for the op tests: the double reference's vectors and the op's tensors built
// from them (optionally as column slices of wider buffers, and one token's rows for the step).
#pragma once
#include <cstdint>
#include <string>

#include "core/random.h"
#include "ops/ops.h"
#include "ops/ref/mamba3.h"
#include "ops/test_backward_util.h"

namespace ssm::testing {

struct Mamba3Case {
  int64_t batch = 2, T = 13, H = 4, P = 3, G = 2, N = 8, S = 2, chunk = 4;
  int64_t R = 1;               // the MIMO rank
  bool rotate_halves = false;  // MIMO's rotation pairs (j, j + N/2)
  double A_floor = 1e-4;  // 0.3: the floor acts for A below about −2.3
  bool with_D = true, strided = false;
  uint64_t seed = 1;

  ref::Mamba3Dims dims() const { return {batch, T, H, P, G, N, S, R, rotate_halves}; }
  std::string describe() const {
    return "batch " + std::to_string(batch) + " T " + std::to_string(T) + " H " + std::to_string(H) + " P " +
           std::to_string(P) + " G " + std::to_string(G) + " N " + std::to_string(N) + " S " + std::to_string(S) +
           " chunk " + std::to_string(chunk) + " R " + std::to_string(R) + (rotate_halves ? " halves" : "") + " A_floor " + std::to_string(A_floor) + (with_D ? "" : " no D") + (strided ? " strided" : "");
  }
};

inline ref::Mamba3RefInputs make_mamba3_data(const Mamba3Case& c) {
  Rng rng(c.seed);
  const int64_t rows = c.batch * c.T;
  ref::Mamba3RefInputs in;
  in.x = randn(rng, rows * c.R * c.H * c.P);
  in.B = randn(rng, rows * c.R * c.G * c.N);
  in.C = randn(rng, rows * c.R * c.G * c.N);
  in.dt = randn(rng, rows * c.H, 1.0, -0.5);
  in.A = randn(rng, rows * c.H, 2.0);
  in.trap = randn(rng, rows * c.H, 2.0);
  in.angles = randn(rng, rows * c.S, 1.5);
  in.dt_bias = randn(rng, c.H, 0.5, -1.0);
  in.B_bias = randn(rng, c.H * c.R * c.N, 0.5, 1.0);
  in.C_bias = randn(rng, c.H * c.R * c.N, 0.5, 1.0);
  if (c.with_D) in.D = randn(rng, c.H, 0.5, 1.0);
  in.A_floor = double(float(c.A_floor));
  return in;
}

// Rows [t0, t0 + n) of every sequence of a [batch, T, width] vector.
inline Vec mamba3_rows(const Vec& v, const Mamba3Case& c, int64_t width, int64_t t0, int64_t n) {
  Vec out;
  for (int64_t b = 0; b < c.batch; ++b)
    out.insert(out.end(), v.begin() + (b * c.T + t0) * width, v.begin() + (b * c.T + t0 + n) * width);
  return out;
}

// Op inputs holding rows [t0, t0 + n) of the data (step: [batch, width] of row t0).
inline ops::Mamba3Inputs make_mamba3_inputs(const Mamba3Case& c, const ref::Mamba3RefInputs& d, int64_t t0,
                                            int64_t n, bool step = false) {
  const auto rows = [&](const Vec& all, int64_t width, int64_t pad) {
    const Vec part = mamba3_rows(all, c, width, t0, n);
    const Shape shape = step ? Shape{c.batch, width} : Shape{c.batch, n, width};
    return c.strided ? make_strided(shape, part, pad) : make(shape, part);
  };
  ops::Mamba3Inputs in;
  in.x = rows(d.x, c.R * c.H * c.P, 3);
  in.B = rows(d.B, c.R * c.G * c.N, 1);
  in.C = rows(d.C, c.R * c.G * c.N, 2);
  in.dt = rows(d.dt, c.H, 5);
  in.A = rows(d.A, c.H, 1);
  in.trap = rows(d.trap, c.H, 2);
  in.angles = rows(d.angles, c.S, 4);
  in.dt_bias = make({c.H}, d.dt_bias);
  in.B_bias = make({c.H, c.R * c.N}, d.B_bias);
  in.C_bias = make({c.H, c.R * c.N}, d.C_bias);
  if (c.with_D) in.D = make({c.H}, d.D);
  in.n_groups = c.G;
  in.rank = c.R;
  in.rotation = c.rotate_halves ? ops::Mamba3Rotation::Halves : ops::Mamba3Rotation::AdjacentPairs;
  in.A_floor = float(c.A_floor);
  in.chunk_size = c.chunk;
  return in;
}

}  // namespace ssm::testing
