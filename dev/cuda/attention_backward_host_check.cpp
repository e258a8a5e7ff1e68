// Runs the attention backward kernels of src/ops/cuda/attention_backward_kernels.cuh on the CPU (the
// execution model of cuda_on_cpu.h), in the order ops::cuda::attention_backward launches them, and
// checks dq, dk, dv against the backward of plain attention in double: T and S not multiples of the
// 64-row tiles, keys before the queries (S > T), MHA / GQA / MQA, sliding windows (keys of the prefix
// that no query sees get 0), head dims in one to four 64-channel slices and not multiples of 8, an
// explicit scale, batch > 1, both dtypes. Every tensor is a column slice of wider rows with extra rows
// per batch (row and batch strides unlike the shape's); the gradients start as NaN and the elements
// around them must stay NaN. Each case runs with a block's threads first to last, then last to
// first: the two must give the same bits (a missing barrier shows as a difference), and no kernel
// may touch shared memory past its launch's size.
//
//   g++ -std=c++20 -O2 -I/usr/local/cuda/include dev/cuda/attention_backward_host_check.cpp
//       -o build/dev-cuda/attention_backward_host_check
//   build/dev-cuda/attention_backward_host_check        (one line per case; exit 1 on a failure)
#include "check_util.h"
#include "cuda_on_cpu.h"

namespace ssm::ops::cuda::attention_backward_kernels {
alignas(16) unsigned char smem[232448];
}

#include "../../src/ops/cuda/attention_backward_kernels.cuh"
#include "attention_backward_reference.h"

namespace kernels = ssm::ops::cuda::attention_backward_kernels;
using bf16 = __nv_bfloat16;

struct Case {
  int batch, T, S, heads, kv_heads, head_dim;
  int64_t window;
  float scale = 0.0f;  // 0: 1 / sqrt(head_dim)
};

// A [B, rows, width] sequence tensor inside a NaN buffer of [B, rows + 3, width + 7] starting at
// column 4: batch and row strides unlike the shape's.
template <class T>
struct Seq {
  int batch, rows, width;
  std::vector<T> buffer;
  static constexpr int kExtraRows = 3, kExtraCols = 7, kFirstCol = 4;
  Seq(int b, int r, int w) : batch(b), rows(r), width(w) {
    buffer.assign(size_t(b) * (r + kExtraRows) * (w + kExtraCols), T(NAN));
  }
  int64_t row_stride() const { return width + kExtraCols; }
  int64_t batch_stride() const { return (rows + kExtraRows) * row_stride(); }
  size_t at(int b, int r, int c) const { return size_t(b * batch_stride() + r * row_stride() + kFirstCol + c); }
  kernels::SeqPtr<T> ptr() { return {buffer.data() + kFirstCol, batch_stride(), row_stride()}; }
  kernels::SeqPtr<const T> cptr() const { return {buffer.data() + kFirstCol, batch_stride(), row_stride()}; }
  float get(int b, int r, int c) const { return float(buffer[at(b, r, c)]); }
  void set(int b, int r, int c, float v) { buffer[at(b, r, c)] = T(v); }
  // Whether every element outside the [B, rows, width] slice is still NaN.
  bool outside_untouched() const {
    for (int b = 0; b < batch; ++b)
      for (int r = 0; r < rows + kExtraRows; ++r)
        for (int c = 0; c < width + kExtraCols; ++c) {
          const bool inside = r < rows && c >= kFirstCol && c < kFirstCol + width;
          if (!inside && !std::isnan(float(buffer[size_t(b * batch_stride() + r * row_stride() + c)]))) return false;
        }
    return true;
  }
};

// Runs a kernel over a 3-d grid of 256-thread blocks (cuda_on_cpu.h's launch walks x).
template <class F>
void launch_grid(unsigned x, unsigned y, unsigned z, int threads, F&& kernel) {
  for (unsigned zi = 0; zi < z; ++zi)
    for (unsigned yi = 0; yi < y; ++yi) {
      blockIdx.y = yi;
      blockIdx.z = zi;
      fibers::launch(x, threads, kernel);
    }
}

struct Outputs {
  std::vector<float> dq, dk, dv;  // the kernels' buffers (with the NaN around) as F32
  bool untouched = true, smem_ok = true;
};

template <class T, int kChunks>
void run_kernels(const kernels::Args<T>& a, bool& smem_ok) {
  auto launch = [&](unsigned x, unsigned y, unsigned z, int threads, size_t smem_bytes, auto&& kernel) {
    poison_shared(kernels::smem);
    launch_grid(x, y, z, threads, kernel);
    smem_ok &= shared_untouched_from(kernels::smem, smem_bytes);
  };
  const int64_t rows = int64_t(a.batch) * a.T * a.n_heads;
  if (rows > 0)
    launch(unsigned((rows + kernels::kDeltaWarps - 1) / kernels::kDeltaWarps), 1, 1, 32 * kernels::kDeltaWarps, 0,
           [&] { kernels::delta_kernel<T>(a); });
  launch(unsigned((a.S + kernels::kTile - 1) / kernels::kTile), unsigned(a.n_kv_heads), unsigned(a.batch),
         kernels::kThreads, kernels::dkdv_smem_bytes<kChunks>(), [&] { kernels::dkdv_kernel<T, kChunks>(a); });
  if (rows > 0)
    launch(unsigned((a.T + kernels::kTile - 1) / kernels::kTile), unsigned(a.n_heads), unsigned(a.batch),
           kernels::kThreads, kernels::dq_smem_bytes<kChunks>(), [&] { kernels::dq_kernel<T, kChunks>(a); });
}

template <class T>
Outputs run(const Case& k, float scale, const Seq<T>& q, const Seq<T>& kk, const Seq<T>& v, const Seq<T>& o,
            const Seq<T>& dout, const std::vector<float>& lse, bool reverse) {
  fibers::reverse_order = reverse;
  Seq<T> dq(k.batch, k.T, k.heads * k.head_dim), dk(k.batch, k.S, k.kv_heads * k.head_dim),
      dv(k.batch, k.S, k.kv_heads * k.head_dim);
  std::vector<float> delta(size_t(k.batch) * k.heads * k.T, NAN);
  const kernels::Args<T> a{q.cptr(), o.cptr(), dout.cptr(), kk.cptr(), v.cptr(), dq.ptr(), dk.ptr(), dv.ptr(),
                           lse.data(), delta.data(), k.batch, k.T, k.S, k.heads, k.kv_heads, k.head_dim, scale,
                           k.window};
  Outputs out;
  switch (kernels::chunks_for(k.head_dim)) {
    case 1: run_kernels<T, 1>(a, out.smem_ok); break;
    case 2: run_kernels<T, 2>(a, out.smem_ok); break;
    case 3: run_kernels<T, 3>(a, out.smem_ok); break;
    default: run_kernels<T, 4>(a, out.smem_ok); break;
  }
  auto as_float = [](const Seq<T>& s) {
    std::vector<float> f(s.buffer.size());
    for (size_t i = 0; i < f.size(); ++i) f[i] = float(s.buffer[i]);
    return f;
  };
  out.dq = as_float(dq);
  out.dk = as_float(dk);
  out.dv = as_float(dv);
  out.untouched = dq.outside_untouched() && dk.outside_untouched() && dv.outside_untouched();
  return out;
}

// rel_error over the slice of `layout` in got (want is the slice, dense).
template <class T>
double rel_error(const std::vector<double>& want, const std::vector<float>& got, const Seq<T>& layout) {
  const size_t per_batch = size_t(layout.rows) * layout.width;
  return rel_error(want, [&](size_t i) {
    return double(got[layout.at(int(i / per_batch), int(i % per_batch / layout.width), int(i % layout.width))]);
  });
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

template <class T>
bool run_case(const Case& k, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> wide(-2.0f, 2.0f), unit(-1.0f, 1.0f);
  const int qw = k.heads * k.head_dim, kw = k.kv_heads * k.head_dim;
  const float scale = k.scale != 0.0f ? k.scale : 1.0f / std::sqrt(float(k.head_dim));
  Seq<T> q(k.batch, k.T, qw), kk(k.batch, k.S, kw), v(k.batch, k.S, kw), dout(k.batch, k.T, qw), o(k.batch, k.T, qw);
  auto fill = [&](Seq<T>& s, std::uniform_real_distribution<float>& dist) {
    for (int b = 0; b < s.batch; ++b)
      for (int r = 0; r < s.rows; ++r)
        for (int c = 0; c < s.width; ++c) s.set(b, r, c, round_to<T>(dist(gen)));
  };
  fill(q, wide);
  fill(kk, wide);
  fill(v, unit);
  fill(dout, unit);
  auto contiguous = [](const Seq<T>& s) {
    std::vector<float> f;
    for (int b = 0; b < s.batch; ++b)
      for (int r = 0; r < s.rows; ++r)
        for (int c = 0; c < s.width; ++c) f.push_back(s.get(b, r, c));
    return f;
  };
  const attention_reference::Result want = attention_reference::forward_backward(
      {k.batch, k.T, k.S, k.heads, k.kv_heads, k.head_dim, k.window, scale, contiguous(q), contiguous(kk),
       contiguous(v), contiguous(dout)});
  // The forward's outputs as the backward gets them: o in T, lse in F32.
  for (int b = 0; b < k.batch; ++b)
    for (int t = 0; t < k.T; ++t)
      for (int c = 0; c < qw; ++c) o.set(b, t, c, float(want.o[(size_t(b) * k.T + t) * qw + c]));
  std::vector<float> lse(want.lse.begin(), want.lse.end());

  const Outputs first = run(k, scale, q, kk, v, o, dout, lse, false);
  const Outputs second = run(k, scale, q, kk, v, o, dout, lse, true);
  const double tol = sizeof(T) == 2 ? 3e-2 : 1e-4;
  bool ok = true;
  std::string report;
  auto check = [&](const char* name, const std::vector<double>& ref, const std::vector<float>& got, const Seq<T>& at) {
    report_error(report, ok, name, rel_error(ref, got, at), tol);
  };
  const Seq<T> dq_at(k.batch, k.T, qw), dkv_at(k.batch, k.S, kw);
  check("dq", want.dq, first.dq, dq_at);
  check("dk", want.dk, first.dk, dkv_at);
  check("dv", want.dv, first.dv, dkv_at);
  if (!first.untouched || !second.untouched) {
    report += " written outside the gradients (FAIL)";
    ok = false;
  }
  if (!first.smem_ok || !second.smem_ok) {
    report += " shared memory used past the launch's size (FAIL)";
    ok = false;
  }
  if (!same_bits(first.dq, second.dq) || !same_bits(first.dk, second.dk) || !same_bits(first.dv, second.dv)) {
    report += " threads last to first give other bits (FAIL)";
    ok = false;
  }
  std::printf("%s B %d T %d S %d heads %d/%d d %d window %lld scale %.3g:%s\n", sizeof(T) == 2 ? "bf16" : "f32 ",
              k.batch, k.T, k.S, k.heads, k.kv_heads, k.head_dim, (long long)k.window, scale, report.c_str());
  return ok;
}

int main() {
  const Case cases[] = {
      {2, 65, 65, 4, 4, 64, 0},          // MHA, one tile and a row
      {1, 130, 200, 4, 2, 128, 0},       // GQA, keys before the queries, two slices
      {2, 7, 30, 6, 3, 64, 5},           // window 5: the prefix's first keys are seen by no query
      {1, 100, 100, 2, 1, 80, 64},       // MQA, d 80, a window across tiles
      {2, 33, 33, 2, 2, 20, 0},          // d 20: not a multiple of 8
      {1, 70, 70, 2, 2, 256, 0},         // d 256: four slices
      {1, 1, 40, 4, 2, 128, 0},          // one query over a prefix
      {1, 129, 129, 3, 1, 192, 2},       // window 2: each query sees itself and one key before; three slices
      {2, 50, 80, 4, 1, 32, 0, 0.3f},    // an explicit scale, MQA
      {1, 0, 10, 2, 1, 16, 0},           // no queries: dk and dv are 0
  };
  bool ok = true;
  unsigned seed = 1;
  for (const Case& k : cases) {
    ok &= run_case<float>(k, seed++);
    ok &= run_case<bf16>(k, seed++);
  }
  std::printf(ok ? "all cases pass\n" : "FAILURES\n");
  return ok ? 0 : 1;
}
