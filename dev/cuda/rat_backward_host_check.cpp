// Runs the RAT backward kernels of src/ops/cuda/rat_backward_kernels.cuh on the CPU (the execution model
// of cuda_on_cpu.h), in the order rat_backward.cu launches them, and checks every gradient against the
// backward of the plain dense form in double (every per-query softmax materialised): partial last
// chunks, chunks of one token and chunks longer than T, several 32-query and 32-end tiles, head sizes
// under one 32-channel slice and over several, q/k groups shared by several heads, gradients not asked
// for, both dtypes; each case with a block's threads run first to last, then last to first (a missing
// barrier shows in one of the two). Inputs are column slices of one wide row (as the mixer's
// projection), gradients column slices of another that starts as NaN; the columns beside the gradients
// must stay NaN, dgate_bias starts from random values (it accumulates), and no kernel may touch shared
// memory past its launch's size.
//
//   g++ -std=c++20 -O2 -I/usr/local/cuda/include dev/cuda/rat_backward_host_check.cpp
//       -o build/dev-cuda/rat_backward_host_check
//   build/dev-cuda/rat_backward_host_check        (one line per case; exit 1 on a failure)
#include <string>

#include "check_util.h"
#include "cuda_on_cpu.h"

namespace ssm::ops::cuda::rat_backward_kernels {
alignas(16) unsigned char smem[65536];
}

#include "../../src/ops/cuda/rat_backward_kernels.cuh"

namespace kernels = ssm::ops::cuda::rat_backward_kernels;
using bf16 = __nv_bfloat16;

struct Case {
  int batch, T, heads, groups, dh, chunk;
  float theta = 10000.0f, scale = 0.0f;  // scale 0: dh^-1/2
  bool dq = true, dk = true, dv = true, dg = true, dbias = true;
};

// The inputs in F32 (activations already rounded to the dtype), rows [batch·T, width] each.
struct Problem {
  std::vector<float> q, k, v, g, dy, bias, dbias0;
};

struct Reference {
  std::vector<double> dq, dk, dv, dg, dbias;
};

float inv_freq(float theta, int dh, int j) { return 1.0f / std::pow(theta, float(2 * j) / float(dh)); }

// R_p x (inverse: R_pᵀ x) of one head, with the angles the kernels use.
std::vector<double> rotate(const std::vector<double>& x, int p, float theta, bool inverse) {
  const int dh = int(x.size()), half = dh / 2;
  std::vector<double> out(x.size());
  for (int j = 0; j < half; ++j) {
    const float angle = float(p) * inv_freq(theta, dh, j);
    const double c = double(float(std::cos(double(angle)))), s = double(float(std::sin(double(angle))));
    const double sn = inverse ? -s : s;
    out[j] = x[j] * c - x[j + half] * sn;
    out[j + half] = x[j + half] * c + x[j] * sn;
  }
  return out;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// The dense backward in double: per (b, h) every state, every chunk end and every query's softmax.
Reference reference(const Case& k, const Problem& p) {
  const int B = k.batch, T = k.T, H = k.heads, G = k.groups, dh = k.dh, L = k.chunk, W = H * dh, QW = G * dh;
  const double lambda = k.scale > 0 ? k.scale : 1.0 / std::sqrt(double(dh));
  const int ends = T / L;
  Reference r;
  r.dq.assign(size_t(B) * T * QW, 0.0);
  r.dk.assign(r.dq.size(), 0.0);
  r.dv.assign(size_t(B) * T * W, 0.0);
  r.dg.assign(r.dv.size(), 0.0);
  r.dbias.assign(p.dbias0.begin(), p.dbias0.end());
  using Vec = std::vector<double>;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int col = h * dh, qk = (h % G) * dh;
      auto in = [&](const std::vector<float>& x, int width, int c0, int t) {
        Vec out(dh);
        for (int j = 0; j < dh; ++j) out[j] = x[(size_t(b) * T + t) * width + c0 + j];
        return out;
      };
      std::vector<Vec> ks(T, Vec(dh)), vs(T, Vec(dh)), gate(T, Vec(dh)), q(T), Q(T);
      for (int t = 0; t < T; ++t) {
        const Vec kt = in(p.k, QW, qk, t), vt = in(p.v, W, col, t), gt = in(p.g, W, col, t);
        for (int j = 0; j < dh; ++j) {
          const double a = 1.0 / (1.0 + std::exp(-(gt[j] + p.bias[col + j])));
          gate[t][j] = a;
          const bool restart = t % L == 0;
          ks[t][j] = (restart ? 0.0 : a * ks[t - 1][j]) + (1 - a) * kt[j];
          vs[t][j] = (restart ? 0.0 : a * vs[t - 1][j]) + (1 - a) * vt[j];
        }
        q[t] = in(p.q, QW, qk, t);
        Q[t] = rotate(q[t], t / L, k.theta, false);
        for (double& x : Q[t]) x *= lambda;
      }
      std::vector<Vec> K(ends), V(ends), dK(ends, Vec(dh, 0.0)), dV(ends, Vec(dh, 0.0));
      for (int e = 0; e < ends; ++e) {
        K[e] = rotate(ks[e * L + L - 1], e, k.theta, false);
        V[e] = vs[e * L + L - 1];
      }
      std::vector<Vec> dks(T, Vec(dh, 0.0)), dvs(T, Vec(dh, 0.0));
      for (int t = 0; t < T; ++t) {
        const int c = t / L;
        const Vec dy = in(p.dy, W, col, t);
        Vec s(c + 1);
        for (int e = 0; e < c; ++e) s[e] = dot(Q[t], K[e]);
        s[c] = lambda * dot(q[t], ks[t]);
        const double mx = *std::max_element(s.begin(), s.end());
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - mx));
        for (double& x : s) x /= sum;  // P
        Vec dP(c + 1);
        for (int e = 0; e < c; ++e) dP[e] = dot(dy, V[e]);
        dP[c] = dot(dy, vs[t]);
        const double D = dot(s, dP);
        Vec dQ(dh, 0.0);
        for (int e = 0; e < c; ++e) {
          const double dS = s[e] * (dP[e] - D);
          for (int j = 0; j < dh; ++j) {
            dQ[j] += dS * K[e][j];
            dK[e][j] += dS * Q[t][j];
            dV[e][j] += s[e] * dy[j];
          }
        }
        const double dS_run = s[c] * (dP[c] - D);
        const Vec dq_rot = rotate(dQ, c, k.theta, true);
        for (int j = 0; j < dh; ++j) {
          r.dq[(size_t(b) * T + t) * QW + qk + j] += lambda * dq_rot[j] + lambda * dS_run * ks[t][j];
          dks[t][j] += lambda * dS_run * q[t][j];
          dvs[t][j] += s[c] * dy[j];
        }
      }
      for (int e = 0; e < ends; ++e) {
        const Vec back = rotate(dK[e], e, k.theta, true);
        for (int j = 0; j < dh; ++j) {
          dks[e * L + L - 1][j] += back[j];
          dvs[e * L + L - 1][j] += dV[e][j];
        }
      }
      Vec carry_k(dh, 0.0), carry_v(dh, 0.0);
      for (int t = T - 1; t >= 0; --t) {
        if (t % L == L - 1 || t == T - 1) {  // a chunk's last token: nothing carried in from later chunks
          std::fill(carry_k.begin(), carry_k.end(), 0.0);
          std::fill(carry_v.begin(), carry_v.end(), 0.0);
        }
        const Vec kt = in(p.k, QW, qk, t), vt = in(p.v, W, col, t);
        for (int j = 0; j < dh; ++j) {
          const double a = gate[t][j], tk = dks[t][j] + carry_k[j], tv = dvs[t][j] + carry_v[j];
          const bool first = t % L == 0;
          const double kprev = first ? 0.0 : ks[t - 1][j], vprev = first ? 0.0 : vs[t - 1][j];
          const double draw = (tv * (vprev - vt[j]) + tk * (kprev - kt[j])) * a * (1 - a);
          r.dk[(size_t(b) * T + t) * QW + qk + j] += (1 - a) * tk;
          r.dv[(size_t(b) * T + t) * W + col + j] = (1 - a) * tv;
          r.dg[(size_t(b) * T + t) * W + col + j] = draw;
          r.dbias[col + j] += draw;
          carry_k[j] = a * tk;
          carry_v[j] = a * tv;
        }
      }
    }
  return r;
}

template <class E>
bool run_case(const Case& k, unsigned seed) {
  std::mt19937 gen(seed);
  const int B = k.batch, T = k.T, H = k.heads, G = k.groups, dh = k.dh, W = H * dh, QW = G * dh;
  const size_t rows = size_t(B) * T;
  NormalFill<E> fill{gen};
  Problem p;
  fill(p.q, rows * QW, 1.0f, 0.0f, true);
  fill(p.k, rows * QW, 1.0f, 0.0f, true);
  fill(p.v, rows * W, 1.0f, 0.0f, true);
  fill(p.g, rows * W, 1.0f, 0.5f, true);
  fill(p.dy, rows * W, 1.0f, 0.0f, true);
  fill(p.bias, W, 0.5f, 1.0f, false);
  fill(p.dbias0, W, 1.0f, 0.0f, false);
  const Reference want = reference(k, p);

  // Inputs: one wide row [pad | q | k | v | g | dy]; gradients: [pad | dq | dk | dv | dg | pad], NaN.
  const int pad = 3, q_at = pad, k_at = q_at + QW, v_at = k_at + QW, g_at = v_at + W, dy_at = g_at + W;
  const int in_width = dy_at + W + pad, out_width = in_width;
  std::vector<E> inputs(rows * in_width, E(0.0f)), outputs(rows * out_width, E(NAN));
  auto place = [&](const std::vector<float>& x, int at, int width) {
    for (size_t r = 0; r < rows; ++r)
      for (int c = 0; c < width; ++c) inputs[r * in_width + at + c] = E(x[r * width + c]);
  };
  place(p.q, q_at, QW);
  place(p.k, k_at, QW);
  place(p.v, v_at, W);
  place(p.g, g_at, W);
  place(p.dy, dy_at, W);
  std::vector<float> dbias(p.dbias0);

  const E* in = inputs.data();
  E* out = outputs.data();
  kernels::Args<E> a{in + q_at,
                     in + k_at,
                     in + v_at,
                     in + g_at,
                     in + dy_at,
                     in_width,
                     in_width,
                     in_width,
                     in_width,
                     in_width,
                     p.bias.data(),
                     k.dq ? out + q_at : nullptr,
                     k.dk ? out + k_at : nullptr,
                     k.dv ? out + v_at : nullptr,
                     k.dg ? out + g_at : nullptr,
                     out_width,
                     out_width,
                     out_width,
                     out_width,
                     B,
                     T,
                     H,
                     G,
                     dh,
                     k.chunk,
                     k.scale > 0 ? k.scale : 1.0f / std::sqrt(float(dh))};
  const kernels::Wanted wanted{k.dq, k.dk, k.dv, k.dg, k.dbias};
  kernels::Scratch s{};
  std::vector<float> scratch(size_t(kernels::carve_scratch(a, wanted, nullptr, s)), NAN);
  kernels::carve_scratch(a, wanted, scratch.data(), s);
  kernels::Freqs freqs{};
  for (int j = 0; j < dh / 2; ++j) freqs.inv_freq[j] = inv_freq(k.theta, dh, j);

  // The launches of rat_backward.cu, each with its shared memory poisoned and checked.
  bool smem_ok = true;
  auto launch = [&](int64_t blocks, int threads, size_t smem_floats, auto&& kernel) {
    poison_shared(kernels::smem);
    fibers::launch(unsigned(blocks), threads, kernel);
    smem_ok &= shared_untouched_from(kernels::smem, smem_floats * sizeof(float));
  };
  const int64_t chunk_blocks = int64_t(B) * H * a.chunks(), query_blocks = int64_t(B) * H * a.query_tiles();
  const int64_t end_blocks = int64_t(B) * H * a.end_tiles();
  const int pair_threads = (a.half() + 31) / 32 * 32;
  const int64_t table = int64_t(a.chunks()) * a.half();
  launch((table + 255) / 256, 256, 0, [&] { kernels::rope_table_kernel(freqs, a.chunks(), a.half(), s.cos, s.sin); });
  launch(chunk_blocks, pair_threads, 0, [&] { kernels::states_kernel<E>(a, s); });
  launch(query_blocks, kernels::kTileThreads, kernels::kStatsFloats, [&] { kernels::query_stats_kernel<E>(a, s); });
  if (wanted.recurrence() && end_blocks > 0)
    launch(end_blocks, kernels::kTileThreads, kernels::kEndGradsFloats, [&] { kernels::end_grads_kernel<E>(a, s); });
  if (wanted.dq)
    launch(query_blocks, kernels::kTileThreads, kernels::kQueryGradsFloats,
           [&] { kernels::query_grads_kernel<E>(a, s); });
  launch(chunk_blocks, pair_threads, 0, [&] { kernels::recurrence_kernel<E>(a, s); });
  if (wanted.dq || wanted.dk) {
    const int64_t n = int64_t(rows) * QW;
    launch((n + 255) / 256, 256, 0, [&] { kernels::group_sums_kernel<E>(a, s); });
  }
  if (wanted.dbias)  // add_column_sums, in its order (16 slices of every 16th part, then the slices)
    for (int c = 0; c < W; ++c) {
      const int64_t parts = int64_t(B) * a.chunks();
      float slices[16] = {};
      for (int sl = 0; sl < 16; ++sl)
        for (int64_t part = sl; part < parts; part += 16) slices[sl] += s.dbias_part[part * W + c];
      float total = 0.0f;
      for (float x : slices) total += x;
      dbias[c] += total;
    }

  const double tol = sizeof(E) == 2 ? 3e-2 : 1e-4;
  bool ok = true;
  std::string report;
  auto check = [&](const char* name, const std::vector<double>& ref, auto&& at) {
    report_error(report, ok, name, rel_error(ref, at), tol);
  };
  auto column = [&](int at, int width) { return column_reader(outputs, out_width, at, width); };
  if (k.dq) check("dq", want.dq, column(q_at, QW));
  if (k.dk) check("dk", want.dk, column(k_at, QW));
  if (k.dv) check("dv", want.dv, column(v_at, W));
  if (k.dg) check("dg", want.dg, column(g_at, W));
  if (k.dbias) check("dbias", want.dbias, vector_reader(dbias));
  if (!k.dbias && dbias != p.dbias0) {
    report += " dgate_bias changed though not asked for (FAIL)";
    ok = false;
  }
  if (!smem_ok) {
    report += " shared memory used past the launch's size (FAIL)";
    ok = false;
  }
  // Nothing written outside the gradients asked for.
  for (size_t r = 0; r < rows; ++r)
    for (int c = 0; c < out_width; ++c) {
      const bool asked = (k.dq && c >= q_at && c < q_at + QW) || (k.dk && c >= k_at && c < k_at + QW) ||
                         (k.dv && c >= v_at && c < v_at + W) || (k.dg && c >= g_at && c < g_at + W);
      if (!asked && !std::isnan(float(outputs[r * out_width + c]))) {
        if (ok) report += " wrote outside the gradients (FAIL)";
        ok = false;
        r = rows;
        break;
      }
    }
  std::printf("%-4s %s B %d T %4d H %d G %d dh %3d L %3d grads %d%d%d%d%d |%s %s\n", sizeof(E) == 2 ? "bf16" : "f32",
              fibers::reverse_order ? "rev" : "fwd", B, T, H, G, dh, k.chunk, k.dq, k.dk, k.dv, k.dg, k.dbias,
              report.c_str(), ok ? "ok" : "FAIL");
  std::fflush(stdout);
  return ok;
}

int main() {
  std::vector<Case> cases = {
      {1, 1, 1, 1, 2, 1},      // one token, one end-less chunk
      {2, 37, 4, 2, 8, 4},     // groups of two heads, a partial last chunk
      {2, 50, 2, 1, 6, 7},     // a head size under a pair of warps' worth, partial chunk
      {1, 150, 2, 2, 40, 2},   // 75 ends: three end tiles, five query tiles; two channel slices
      {2, 64, 3, 1, 64, 16},   // T a multiple of L: the last end is seen by no query
      {1, 33, 2, 1, 4, 40},    // L > T: the gated recurrence alone
      {1, 70, 4, 4, 34, 1},    // chunks of one token: every earlier token an end; 17 pairs
      {1, 45, 2, 1, 130, 5},   // five channel slices, the last partial; 65 pairs (three warps)
  };
  Case scaled{2, 29, 4, 2, 8, 3};
  scaled.theta = 500.0f;
  scaled.scale = 0.7f;
  cases.push_back(scaled);
  Case only_dq{2, 40, 4, 2, 8, 3};
  only_dq.dk = only_dq.dv = only_dq.dg = only_dq.dbias = false;
  cases.push_back(only_dq);
  Case no_dq{2, 40, 4, 2, 8, 3};
  no_dq.dq = no_dq.dg = false;
  cases.push_back(no_dq);
  Case only_bias{1, 40, 2, 1, 8, 3};
  only_bias.dq = only_bias.dk = only_bias.dv = only_bias.dg = false;
  cases.push_back(only_bias);
  return run_cases_both_orders(cases, run_case<float>, run_case<bf16>);
}
