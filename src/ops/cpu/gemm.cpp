#include "ops/cpu/gemm.h"

#include <cblas.h>
#include <fmt/format.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string_view>
#include <tuple>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/cpu/scratch.h"
#include "ops/cpu/weights.h"

extern "C" {
char* openblas_get_corename(void);
void gotoblas_dynamic_quit(void);
void gotoblas_dynamic_init(void);
}

namespace ssm::ops::gemm {

namespace {

struct Choice {
  bool bf16 = false;  // oneDNN's bf16 matmul for 16-bit weights
  std::string reason;
};

bool at_least(dnnl_cpu_isa_t have, dnnl_cpu_isa_t want) { return (int(have) & int(want)) == int(want); }

// OpenBLAS 0.3.21 picks its kernels by CPU model; on AVX-512 models it does not know (AMD Zen 4,
// newer Intel parts) it falls back to Haswell's AVX2 kernels. The core type can be set again at run
// time, which is what OPENBLAS_CORETYPE does when the library loads.
void correct_openblas_core(bool avx512, bool avx512_bf16) {
  const std::string_view core = openblas_get_corename();
  if (!avx512 || core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids") return;
  gotoblas_dynamic_quit();
  setenv("OPENBLAS_CORETYPE", avx512_bf16 ? "Cooperlake" : "SkylakeX", 1);
  gotoblas_dynamic_init();
}

// f32: OpenBLAS, on AVX-512 CPUs with its AVX-512 kernels (oneDNN's sgemm and BLIS were measured no
// faster at the models' shapes). 16-bit weights: oneDNN's bf16 matmul where it runs on AMX tiles,
// 3-5x sgemm; with AVX512_BF16 dot products alone it was slower than widening to f32 for sgemm.
Choice choose() {
  // oneDNN reports the instruction sets of this CPU it will use (cpuid, capped by DNNL_MAX_CPU_ISA).
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  const bool avx512 = at_least(isa, dnnl_cpu_isa_avx512_core);
  const bool avx512_bf16 = at_least(isa, dnnl_cpu_isa_avx512_core_bf16);
  Choice c;
  correct_openblas_core(avx512, avx512_bf16);
  c.bf16 = at_least(isa, dnnl_cpu_isa_avx512_core_amx);
  c.reason =
      fmt::format("f32 products: OpenBLAS ({} kernels); many-row products with 16-bit weights: {}",
                  openblas_get_corename(), c.bf16 ? "oneDNN bf16 matmul (AMX)" : "weights widened to f32 for OpenBLAS");
  return c;
}

const Choice& choice() {
  static const Choice c = choose();
  return c;
}

void check(dnnl_status_t status, const char* what) {
  SSM_CHECK(status == dnnl_success, "oneDNN {} failed (status {})", what, int(status));
}

// The memory descriptors of y[M,N] (row stride ldy, f32) = x[M,K] (bf16) · w[N,K]ᵀ (bf16).
struct MatmulShape {
  dnnl_memory_desc_t src, wei, dst;
  MatmulShape(int64_t M, int64_t N, int64_t K, int64_t ldy) {
    const dnnl_dims_t src_dims = {M, K}, wei_dims = {K, N}, dst_dims = {M, N};
    const dnnl_dims_t src_strides = {K, 1}, wei_strides = {1, K}, dst_strides = {ldy, 1};
    check(dnnl_memory_desc_init_by_strides(&src, 2, src_dims, dnnl_bf16, src_strides), "memory_desc_init");
    check(dnnl_memory_desc_init_by_strides(&wei, 2, wei_dims, dnnl_bf16, wei_strides), "memory_desc_init");
    check(dnnl_memory_desc_init_by_strides(&dst, 2, dst_dims, dnnl_f32, dst_strides), "memory_desc_init");
  }
};

// oneDNN matmul primitives, one per shape, thread count and accumulation: created on first use (a
// few hundred microseconds), then reused; at most kCached are kept (prompts of many lengths).
class Bf16Matmul {
 public:
  // Lives until the process ends, never destroyed: as a plain static its destructor-less exit dropped the
  // cached primitives (an ASan leak), and destroying them at exit could run after oneDNN's own statics.
  static Bf16Matmul& instance() {
    static Bf16Matmul* matmul = new Bf16Matmul;
    return *matmul;
  }

  // Calls are serialised (each runs on all threads).
  void run(const uint16_t* x, const uint16_t* w, int64_t M, int64_t N, int64_t K, bool accumulate, float* y,
           int64_t ldy) {
    std::lock_guard<std::mutex> lock(mutex_);
    const MatmulShape shape(M, N, K, ldy);
    dnnl_primitive_t prim = primitive(shape, {M, N, K, ldy, accumulate, omp_get_max_threads()});
    dnnl_memory_t src, wei, dst;
    check(dnnl_memory_create(&src, &shape.src, engine_, const_cast<uint16_t*>(x)), "memory_create");
    check(dnnl_memory_create(&wei, &shape.wei, engine_, const_cast<uint16_t*>(w)), "memory_create");
    check(dnnl_memory_create(&dst, &shape.dst, engine_, y), "memory_create");
    const dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
    const dnnl_status_t status = dnnl_primitive_execute(prim, stream_, 3, args);
    dnnl_stream_wait(stream_);
    for (dnnl_memory_t m : {src, wei, dst}) dnnl_memory_destroy(m);
    check(status, "bf16 matmul");
  }

 private:
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, bool, int>;  // M, N, K, ldy, accumulate, threads
  static constexpr size_t kCached = 64;

  Bf16Matmul() {
    check(dnnl_engine_create(&engine_, dnnl_cpu, 0), "engine_create");
    check(dnnl_stream_create(&stream_, engine_, dnnl_stream_default_flags), "stream_create");
  }

  dnnl_primitive_t primitive(const MatmulShape& shape, const Key& key) {
    auto it = primitives_.find(key);
    if (it != primitives_.end()) return it->second;
    if (primitives_.size() >= kCached) {
      for (auto& [k, prim] : primitives_) dnnl_primitive_destroy(prim);
      primitives_.clear();
    }
    dnnl_matmul_desc_t desc;
    check(dnnl_matmul_desc_init(&desc, &shape.src, &shape.wei, nullptr, &shape.dst), "matmul_desc_init");
    dnnl_primitive_attr_t attr;
    check(dnnl_primitive_attr_create(&attr), "primitive_attr_create");
    if (std::get<4>(key)) {  // y += x · wᵀ: a "sum" post-op
      dnnl_post_ops_t post_ops;
      check(dnnl_post_ops_create(&post_ops), "post_ops_create");
      check(dnnl_post_ops_append_sum(post_ops, 1.0f), "post_ops_append_sum");
      check(dnnl_primitive_attr_set_post_ops(attr, post_ops), "set_post_ops");
      dnnl_post_ops_destroy(post_ops);
    }
    dnnl_primitive_desc_t pd;
    const dnnl_status_t made = dnnl_primitive_desc_create(&pd, &desc, attr, engine_, nullptr);
    dnnl_primitive_attr_destroy(attr);
    check(made, "matmul primitive_desc_create");
    dnnl_primitive_t prim;
    const dnnl_status_t status = dnnl_primitive_create(&prim, pd);
    dnnl_primitive_desc_destroy(pd);
    check(status, "matmul primitive_create");
    primitives_.emplace(key, prim);
    return prim;
  }

  dnnl_engine_t engine_ = nullptr;
  dnnl_stream_t stream_ = nullptr;
  std::mutex mutex_;
  std::map<Key, dnnl_primitive_t> primitives_;
};

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
           int64_t ldb, float beta, float* c, int64_t ldc) {
  if (M == 0 || N == 0) return;
  choice();  // the OpenBLAS core type is settled before its first product
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(M), int(N),
              int(K), 1.0f, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

bool has_bf16_gemm() { return choice().bf16; }

// The streaming kernel does ~120 GFLOP/s per core on thin products (it reads the weights once and
// packs nothing); past these M a GEMM is faster: sgemm from 96 rows (a tie at 96, ahead from 128); the
// AMX bf16 matmul from 16; 16-bit weights widened for sgemm from 96, as they first pay for the
// widening. docs/performance.md has the measurements.
int64_t linear_min_rows(DType w) {
  if (w == DType::F32) return 96;
  return has_bf16_gemm() ? 16 : 96;
}

bool linear_rounds_x_to_bf16(DType w, int64_t M) {
  return w != DType::F32 && has_bf16_gemm() && M >= linear_min_rows(w);
}

void bf16_matmul(const uint16_t* x, const uint16_t* w, int64_t M, int64_t N, int64_t K, bool accumulate, float* y,
                 int64_t ldy) {
  if (M == 0 || N == 0) return;
  Bf16Matmul::instance().run(x, w, M, N, K, accumulate, y, ldy);
}

void bf16_gemm(const float* x, int64_t ldx, const uint16_t* w, int64_t M, int64_t N, int64_t K, float beta, float* y,
               int64_t ldy) {
  SSM_CHECK(has_bf16_gemm(), "bf16_gemm: this CPU has no bf16 matrix product");
  SSM_CHECK(beta == 0.0f || beta == 1.0f, "bf16_gemm: beta must be 0 or 1, got {}", beta);
  if (M == 0 || N == 0) return;
  thread_local detail::Scratch x16;
  uint16_t* xb = x16.get<uint16_t>(size_t(M * K));
  to_bf16(x, ldx, M, K, xb, K);
  bf16_matmul(xb, w, M, N, K, beta != 0.0f, y, ldy);
}

std::string describe_choice() { return choice().reason; }

void to_bf16(const float* x, int64_t ldx, int64_t rows, int64_t cols, uint16_t* out, int64_t ld_out) {
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r) detail::to_bf16<DType::F32>(x + r * ldx, cols, out + r * ld_out);
}

}  // namespace ssm::ops::gemm
