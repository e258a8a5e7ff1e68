// ssm_gemm_probe: times the matrix-product libraries a CPU build could use, at the shapes of the
// models, in one process with the variants interleaved round by round (the machine is shared, so
// variants compared in different minutes are not comparable). It measures; it decides nothing.
//
//   build/release/bin/ssm_gemm_probe [--threads 1,2] [--rounds 7] [--shapes prefill|small|head|decode|all]
//
// Variants (a row each, where the library is present):
//   openblas/<core>   OpenBLAS sgemm with each core type 0.3.21 can run here, switched in-process
//                     (gotoblas_dynamic_quit + OPENBLAS_CORETYPE + gotoblas_dynamic_init)
//   blis              BLIS sgemm (Debian's libblis4-openmp, loaded with dlopen: its BLAS symbols
//                     would otherwise clash with OpenBLAS'), with the config it picks for this CPU
//   dnnl-sgemm        oneDNN's dnnl_sgemm
//   dnnl-bf16 matmul  oneDNN matmul, bf16 x bf16 -> f32 (x converted to bf16 inside the timing), on the
//                     best instruction set oneDNN finds (the header prints it)
//   ssm-f32, ssm-bf16 ops::linear as built (F32 / BF16 weights), whatever it dispatches to
// Set DNNL_MAX_CPU_ISA=AVX512_CORE_BF16 to see oneDNN without AMX.
#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "ops/cpu/gemm.h"
#include "ops/ops.h"

extern "C" {
void gotoblas_dynamic_quit(void);
void gotoblas_dynamic_init(void);
char* openblas_get_corename(void);
void cblas_sgemm(int order, int transa, int transb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc);
}

namespace ssm {
namespace {

struct Shape3 {
  const char* what;
  int64_t M, N, K;
};

using Clock = std::chrono::steady_clock;
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

struct Blis {
  void* handle = nullptr;
  SgemmFn sgemm = nullptr;
  void (*set_threads)(int64_t) = nullptr;
  std::string arch;
  bool load() {
    handle = dlopen("/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4", RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!handle) return false;
    sgemm = reinterpret_cast<SgemmFn>(dlsym(handle, "cblas_sgemm"));
    set_threads = reinterpret_cast<void (*)(int64_t)>(dlsym(handle, "bli_thread_set_num_threads"));
    auto query = reinterpret_cast<int (*)()>(dlsym(handle, "bli_arch_query_id"));
    auto name = reinterpret_cast<const char* (*)(int)>(dlsym(handle, "bli_arch_string"));
    if (query && name) arch = name(query());
    return sgemm && set_threads;
  }
};

struct Variant {
  std::string name;
  std::function<void()> setup;  // before each timed call (switches the OpenBLAS core)
  std::function<void()> run;
  std::vector<double> seconds;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The OpenBLAS core type ops::gemm settles on (it corrects the detected one on some CPUs).
std::string chosen_core;

void probe(const Shape3& s, int threads, int rounds, Blis* blis, const std::vector<std::string>& cores) {
  Rng rng(7);
  Tensor x = Tensor::empty({s.M, s.K}), w = Tensor::empty({s.N, s.K}), y = Tensor::empty({s.M, s.N});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = rng.uniform(-1, 1);
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = rng.uniform(-1, 1);
  const Tensor w16 = w.to(DType::BF16);
  Tensor x16 = Tensor::empty({s.M, s.K}, DType::BF16);
  const int M = int(s.M), N = int(s.N), K = int(s.K);
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  float* yp = y.data<float>();

  const auto use_core = [](const std::string& core) {
    if (core == openblas_get_corename()) return;
    gotoblas_dynamic_quit();
    setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
    gotoblas_dynamic_init();
  };
  std::vector<Variant> variants;
  for (const std::string& core : cores) {
    variants.push_back({"openblas/" + core,
                        [=] { use_core(core); },
                        [=] { cblas_sgemm(kRowMajor, kNoTrans, kTrans, M, N, K, 1, xp, K, wp, K, 0, yp, N); },
                        {}});
  }
  if (blis) {
    variants.push_back({"blis/" + blis->arch,
                        [blis, threads] { blis->set_threads(threads); },
                        [=] { blis->sgemm(kRowMajor, kNoTrans, kTrans, M, N, K, 1, xp, K, wp, K, 0, yp, N); },
                        {}});
  }
  variants.push_back({"dnnl-sgemm", {}, [=] { dnnl_sgemm('N', 'T', M, N, K, 1, xp, K, wp, K, 0, yp, N); }, {}});
  uint16_t* x16p = x16.data<uint16_t>();
  const uint16_t* w16p = w16.data<uint16_t>();
  variants.push_back({"dnnl-bf16 matmul",
                      {},
                      [=] {
                        ops::gemm::to_bf16(xp, K, M, K, x16p, K);
                        ops::gemm::bf16_matmul(x16p, w16p, M, N, K, false, yp, N);
                      },
                      {}});
  // ops::linear as ops::gemm set it up.
  const Tensor none;
  const auto as_chosen = [=] { use_core(chosen_core); };
  variants.push_back({"ssm-f32", as_chosen, [&] { ops::linear(x, w, none, y); }, {}});
  variants.push_back({"ssm-bf16", as_chosen, [&] { ops::linear(x, w16, none, y); }, {}});

  for (int r = 0; r <= rounds; ++r) {  // round 0 warms up
    for (Variant& v : variants) {
      if (v.setup) v.setup();
      const auto start = Clock::now();
      v.run();
      const double t = std::chrono::duration<double>(Clock::now() - start).count();
      if (r > 0) v.seconds.push_back(t);
    }
  }
  for (const Variant& v : variants) {
    const double flop = 2.0 * double(s.M) * double(s.N) * double(s.K);
    const double best = *std::min_element(v.seconds.begin(), v.seconds.end());
    const double worst = *std::max_element(v.seconds.begin(), v.seconds.end());
    std::printf("| %s | %lld x %lld x %lld | %d | %s | %.0f | %.0f | %.0f |\n", s.what, (long long)s.M, (long long)s.N,
                (long long)s.K, threads, v.name.c_str(), flop / best / 1e9, flop / median(v.seconds) / 1e9,
                flop / worst / 1e9);
  }
  std::fflush(stdout);
}

// Decode's weight stream: ops::linear at M = 1 over the projections of the 24 mamba-130m layers and
// the head, against a plain vectorised read of the same bytes (the floor), interleaved.
void probe_decode(int threads, int rounds, DType dtype) {
  Rng rng(9);
  std::vector<Tensor> weights;
  for (int layer = 0; layer < 24; ++layer)
    for (const auto& [n, k] : {std::pair{3072, 768}, {80, 1536}, {1536, 48}, {768, 1536}})
      weights.push_back(Tensor::empty({n, k}));
  weights.push_back(Tensor::empty({50280, 768}));
  double bytes = 0;
  for (Tensor& w : weights) {
    for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = rng.uniform(-1, 1);
    w = w.to(dtype);
    bytes += double(w.nbytes());
  }
  Tensor x = Tensor::empty({1, 1536}), y = Tensor::empty({1, 50280});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = rng.uniform(-1, 1);
  volatile float sink = 0;
  const auto read_all = [&] {
    for (const Tensor& w : weights) {
      const auto* p = static_cast<const uint32_t*>(w.raw());
      const int64_t words = int64_t(w.nbytes() / 4), rows = w.size(0), per_row = words / rows;
      float total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
      for (int64_t r = 0; r < rows; ++r) {
        uint32_t lanes[16] = {};
        for (int64_t i = 0; i + 16 <= per_row; i += 16)
          for (int j = 0; j < 16; ++j) lanes[j] ^= p[r * per_row + i + j];
        for (uint32_t lane : lanes) total += float(lane & 1);
      }
      sink = sink + total;
    }
  };
  const auto linear_all = [&] {
    for (const Tensor& w : weights) {
      Tensor xs = x.slice(1, 0, w.size(1)), ys = y.slice(1, 0, w.size(0));
      ops::linear(xs, w, Tensor(), ys);
    }
  };
  std::vector<Variant> variants = {{"read (floor)", {}, read_all, {}}, {"ops::linear M=1", {}, linear_all, {}}};
  for (int r = 0; r <= rounds; ++r) {
    for (Variant& v : variants) {
      const auto start = Clock::now();
      v.run();
      if (r > 0) v.seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
  }
  for (const Variant& v : variants) {
    const double best = *std::min_element(v.seconds.begin(), v.seconds.end());
    const double worst = *std::max_element(v.seconds.begin(), v.seconds.end());
    std::printf("| decode weights %s, %.0f MB | %d | %s | %.1f | %.1f | %.1f |\n",
                std::string(dtype_name(dtype)).c_str(), bytes / 1e6, threads, v.name.c_str(), bytes / best / 1e9,
                bytes / median(v.seconds) / 1e9, bytes / worst / 1e9);
  }
  std::fflush(stdout);
}

int run(int argc, char** argv) {
  CLI::App app("Times the matrix-product libraries at the models' shapes");
  std::vector<int> thread_counts = {1, 2};
  int rounds = 7;
  std::string shapes = "all";
  app.add_option("--threads", thread_counts)->delimiter(',');
  app.add_option("--rounds", rounds);
  app.add_option("--shapes", shapes, "prefill, small (in_proj at M 8..128), head, decode (GB/s) or all")
      ->check(CLI::IsMember({"prefill", "small", "head", "decode", "all"}));
  CLI11_PARSE(app, argc, argv);

  const std::string detected = openblas_get_corename();
  std::printf("ops::gemm: %s\n", ops::gemm::describe_choice().c_str());
  chosen_core = openblas_get_corename();
  std::vector<std::string> cores = {detected};
  for (const char* core : {"Haswell", "SkylakeX", "Cooperlake", "Zen"}) {
    if (core == detected) continue;
    gotoblas_dynamic_quit();
    setenv("OPENBLAS_CORETYPE", core, 1);
    gotoblas_dynamic_init();
    if (openblas_get_corename() == std::string(core)) cores.push_back(core);
  }
  Blis blis;
  const bool have_blis = blis.load();
  std::printf("OpenBLAS detected core: %s; cores timed:", detected.c_str());
  for (const auto& c : cores) std::printf(" %s", c.c_str());
  std::printf("\nBLIS: %s\noneDNN effective ISA: 0x%x\n\n", have_blis ? blis.arch.c_str() : "not found",
              unsigned(dnnl_get_effective_cpu_isa()));
  std::printf("| shape | M x N x K | threads | variant | best GFLOP/s | median | worst |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- |\n");

  std::vector<Shape3> list;
  if (shapes == "all" || shapes == "prefill") {
    for (int64_t M : {512, 2048}) {
      list.push_back({"mamba in_proj", M, 3072, 768});
      list.push_back({"mamba2 in_proj", M, 3352, 768});
      list.push_back({"out_proj", M, 768, 1536});
    }
  }
  if (shapes == "all" || shapes == "small") {
    for (int64_t M : {8, 16, 32, 64, 128}) list.push_back({"mamba in_proj", M, 3072, 768});
  }
  if (shapes == "all" || shapes == "head") {
    for (int64_t M : {1, 2, 4, 8, 16, 32, 64, 128}) list.push_back({"head", M, 50280, 768});
  }
  for (int threads : thread_counts) {
    set_num_threads(threads);
    for (const Shape3& s : list) probe(s, threads, rounds, have_blis ? &blis : nullptr, cores);
  }
  if (shapes == "all" || shapes == "decode") {
    std::printf(
        "\n| weights | threads | variant | best GB/s | median | worst |\n| --- | --- | --- | --- | --- | --- |\n");
    for (int threads : thread_counts) {
      set_num_threads(threads);
      for (DType dtype : {DType::F32, DType::BF16}) probe_decode(threads, rounds, dtype);
    }
  }
  return 0;
}

}  // namespace
}  // namespace ssm

int main(int argc, char** argv) { return ssm::run(argc, argv); }
