// Runs the kernels of ops::mlstm_backward (src/ops/cuda/mlstm_backward_kernels.cuh) on the CPU through cuda_on_cpu.h,
// in the order mlstm_backward.cu launches them, from the forward's h, q̂·n_t and m_t (here the double recurrence's),
// and checks every gradient element against a central finite difference in double of L = Σ dh · h over the recurrence
// of ops.h (mlstm_reference.h): rows of C over two warps (the second partial), columns over two and three tiles (n the
// last column), sequences longer than a staged chunk and than
// the gates' slab, batch and heads > 1, both dtypes, both orders of a block's threads.
//
//   g++ -std=c++20 -O2 -I/usr/local/cuda/include dev/cuda/mlstm_backward_host_check.cpp \
//     -o build/dev-cuda/mlstm_backward_host_check
//   build/dev-cuda/mlstm_backward_host_check        (prints one line per case; exit 1 on a failure)
#include "check_util.h"
#include "cuda_on_cpu.h"

namespace ssm::ops::cuda::mlstm_kernels {
alignas(16) float smem[16384];
}

#include "../../src/ops/cuda/mlstm_backward_kernels.cuh"
#include "mlstm_reference.h"

namespace kernels = ssm::ops::cuda::mlstm_kernels;
using bf16 = __nv_bfloat16;

template <class T>
std::vector<T> as(const std::vector<float>& v) {
  return std::vector<T>(v.begin(), v.end());
}
template <class T>
std::vector<float> floats_of(const std::vector<T>& v) {
  return std::vector<float>(v.begin(), v.end());
}

// The gradients as the kernels write them, in F32 (dq, dk, dv read back from T).
struct Grads {
  std::vector<float> q, k, v, i, f;
};

// The forward's outputs (the recurrence's, in double) the backward reads.
struct Forward {
  std::vector<double> h, dots, ms;
};

Forward forward(const Case& k, const InputsOf<double>& in) {
  const size_t heads = size_t(k.batch) * k.H;
  std::vector<double> C(heads * k.dk * k.dv, 0.0), n(heads * k.dk, 0.0), m(heads, 0.0);
  Forward f{{}, std::vector<double>(heads * k.T), std::vector<double>(heads * k.T)};
  reference(k, k.T, in, f.h, C, n, m, &f.dots, &f.ms);
  return f;
}

template <class T>
Grads run_kernels(const Case& k, const Inputs& in, const Forward& fw, const std::vector<float>& dh) {
  const int64_t BH = int64_t(k.batch) * k.H, BT = int64_t(k.batch) * k.T, tokens = BH * k.T;
  const int tiles = (k.dv + 1 + kernels::kWalkCols - 1) / kernels::kWalkCols;
  const int64_t slice = BT * k.H * k.dk;
  const std::vector<T> q = as<T>(in.q), kk = as<T>(in.k), v = as<T>(in.v);
  const std::vector<float> h(fw.h.begin(), fw.h.end()), dots(fw.dots.begin(), fw.dots.end()),
      ms(fw.ms.begin(), fw.ms.end());
  std::vector<float> scalars(8 * tokens, NAN), shares(2 * tiles * slice, NAN);
  std::vector<T> dq(q.size(), T(NAN)), dk(q.size(), T(NAN)), dv(v.size(), T(NAN));
  Grads out{{}, {}, {}, std::vector<float>(BT * k.H, NAN), std::vector<float>(BT * k.H, NAN)};
  kernels::TokenScalars s{dots.data(), ms.data()};
  float** next[] = {&s.forget, &s.input, &s.inv_den, &s.ddot, &s.a, &s.dm, &s.q_share, &s.k_share};
  for (int j = 0; j < 8; ++j) *next[j] = scalars.data() + j * tokens;
  const kernels::BackwardArgs<T> g{{{q.data(), k.H * k.dk},
                                    {kk.data(), k.H * k.dk},
                                    {v.data(), k.H * k.dv},
                                    {in.i.data(), k.H},
                                    {in.f.data(), k.H},
                                    {const_cast<float*>(h.data()), k.H * k.dv},
                                    k.T,
                                    k.H,
                                    k.dk,
                                    k.dv,
                                    1e-6f,
                                    1.0f / std::sqrt(float(k.dk))},
                                   {dh.data(), k.H * k.dv},
                                   s,
                                   {shares.data(), shares.data() + tiles * slice, slice},
                                   tiles,
                                   {{dq.data(), k.H * k.dk},
                                    {dk.data(), k.H * k.dk},
                                    {dv.data(), k.H * k.dv},
                                    {out.i.data(), k.H},
                                    {out.f.data(), k.H}}};
  const size_t shared = kernels::walks_shared_bytes(k.dk) / sizeof(float);
  if (shared > std::size(kernels::smem)) {
    std::printf("a case needs %zu floats of shared memory, more than the check's %zu\n", shared,
                std::size(kernels::smem));
    std::exit(1);
  }
  const unsigned token_blocks = unsigned((BT * k.H + kernels::kPrepWarps - 1) / kernels::kPrepWarps);
  fibers::launch(token_blocks, 32 * kernels::kPrepWarps, [&] { kernels::prep_kernel<T>(g, BT); });
  poison_shared(kernels::smem);
  fibers::launch(Dim3{unsigned(BH), unsigned(tiles), 2}, 32 * kernels::walks_warps(k.dk),
                 [&] { kernels::walks_kernel<T>(g); });
  if (!shared_untouched_from(kernels::smem, shared * sizeof(float))) {
    std::printf("a walk wrote shared memory past its %zu floats\n", shared);
    std::exit(1);
  }
  fibers::launch(token_blocks, 32 * kernels::kPrepWarps, [&] { kernels::tokens_kernel<T>(g, BT); });
  fibers::launch(unsigned(BH), 32, [&] { kernels::gates_kernel<T>(g); });
  out.q = floats_of(dq);
  out.k = floats_of(dk);
  out.v = floats_of(dv);
  return out;
}

// dL/dx for every element of one input tensor of `in`, L = Σ dh · h, by central differences.
std::vector<double> finite_differences(const Case& k, InputsOf<double> in, std::vector<double> InputsOf<double>::*field,
                                       const std::vector<float>& dh) {
  return central_differences(
      in.*field, [&] { return weighted_sum(dh, forward(k, in).h); }, 1e-6);
}

template <class V>
std::vector<double> doubles(const std::vector<V>& v) {
  return std::vector<double>(v.begin(), v.end());
}

template <class T>
bool run_case(const Case& k, unsigned seed) {
  const Inputs in = make_inputs<T>(k, k.T, seed);
  std::mt19937 gen(seed + 1000);
  std::vector<float> dh;
  NormalFill<float>{gen}(dh, size_t(k.batch) * k.T * k.H * k.dv, 1.0f, 0.0f, false);
  const InputsOf<double> exact{doubles(in.q), doubles(in.k), doubles(in.v), doubles(in.i), doubles(in.f)};
  const Forward fw = forward(k, exact);
  // F32: the kernels' F32 arithmetic against double; BF16: dq, dk and dv rounded once to BF16 (di, df stay F32).
  const double tol = sizeof(T) == 2 ? 1e-2 : 1e-4;
  bool ok = true;
  std::string report;
  const std::pair<const char*, std::vector<double> InputsOf<double>::*> fields[] = {{"dq", &InputsOf<double>::q},
                                                                                    {"dk", &InputsOf<double>::k},
                                                                                    {"dv", &InputsOf<double>::v},
                                                                                    {"di", &InputsOf<double>::i},
                                                                                    {"df", &InputsOf<double>::f}};
  std::vector<std::vector<double>> wanted;
  for (const auto& [name, field] : fields) wanted.push_back(finite_differences(k, exact, field, dh));
  for (bool reverse : {false, true}) {
    fibers::reverse_order = reverse;
    const Grads got = run_kernels<T>(k, in, fw, dh);
    const std::vector<float>* gotten[] = {&got.q, &got.k, &got.v, &got.i, &got.f};
    for (size_t j = 0; j < wanted.size(); ++j)
      report_error(report, ok, fields[j].first, rel_error(*gotten[j], wanted[j]), tol);
  }
  fibers::reverse_order = false;
  std::printf("%-4s B %d T %2d H %d dk %2d dv %2d:%s\n", sizeof(T) == 2 ? "bf16" : "f32", k.batch, k.T, k.H, k.dk, k.dv,
              report.c_str());
  return ok;
}

int main() {
  return run_cases(
      std::vector<Case>{
          {2, 19, 1, 36, 35, 16, 0, 0},  // rows over two warps (4 in the second), columns over two tiles, n beside C's
          {1, 21, 2, 8, 64, 16, 0, 0},   // n alone in the third tile; two staged chunks, the second partial
          {3, 5, 2, 16, 8, 16, 0, 0},    // shorter than a staged chunk
          {1, 45, 1, 8, 8, 16, 0, 0},    // the gates' walk over two slabs of 32 tokens, the first partial
      },
      [](const Case& k, unsigned seed) { return run_case<float>(k, seed); },
      [](const Case& k, unsigned seed) { return run_case<bf16>(k, seed); });
}
