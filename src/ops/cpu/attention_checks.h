// Validation of attention's tensors, shared by the CPU kernels (attention.cpp, attention_backward.cpp)
// and the GPU backend (ops/cuda/attention.cu, attention_backward.cu): the checked dimensions of q, k, v
// and the caches.
// The CPU takes F32 tensors on the CPU; the GPU F32 or BF16 tensors (one dtype per call) on the GPU.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/tensor.h"
#include "ops/cpu/op_util.h"
#include "ops/ops.h"

namespace ssm::ops::detail {

// A tensor of `dims` dims ([B,T,W] or [B,W]) with `where`'s dtype and device whose last dim is
// contiguous; other strides free.
inline bool is_seq(const Tensor& t, int64_t dims, const Placement& where) {
  return t.defined() && t.device() == where.device && t.dtype() == where.dtype && t.dim() == dims &&
         (t.stride(-1) == 1 || t.size(-1) <= 1);
}
inline bool is_f32_seq(const Tensor& t, int64_t dims) { return is_seq(t, dims, Placement{}); }

struct AttentionDims {
  int64_t batch, T, S, n_heads, n_kv_heads, head_dim, window;
  float scale;
  int64_t group() const { return n_heads / n_kv_heads; }  // query heads per kv head
  int64_t offset() const { return S - T; }                // position of query 0
};

// Validates the head counts against the widths of q and k/v; returns the head dim.
inline int64_t check_heads(const char* op, const AttentionParams& p, int64_t q_width, int64_t kv_width) {
  SSM_CHECK(p.n_heads > 0 && p.n_kv_heads > 0 && p.n_heads % p.n_kv_heads == 0,
            "{}: n_heads {} must be a positive multiple of n_kv_heads {}", op, p.n_heads, p.n_kv_heads);
  SSM_CHECK(q_width > 0 && q_width % p.n_heads == 0, "{}: q width {} is not n_heads {} x head_dim", op, q_width,
            p.n_heads);
  const int64_t head_dim = q_width / p.n_heads;
  SSM_CHECK(kv_width == p.n_kv_heads * head_dim, "{}: k/v width {} != n_kv_heads {} x head_dim {}", op, kv_width,
            p.n_kv_heads, head_dim);
  SSM_CHECK(p.window >= 0, "{}: window {} is negative", op, p.window);
  SSM_CHECK(std::isfinite(p.scale), "{}: scale {} is not finite", op, p.scale);
  return head_dim;
}

inline float softmax_scale(const AttentionParams& p, int64_t head_dim) {
  return p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(float(head_dim));
}

// q [B,T,n_heads*d], k and v [B,S,n_kv_heads*d] with S >= T.
inline AttentionDims check_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                                     const AttentionParams& p, const Placement& where = {}) {
  const std::string w = where.str();
  SSM_CHECK(is_seq(q, 3, where), "{}: q must be {} [B,T,n_heads*head_dim] with a contiguous last dim, got {}", op, w,
            describe(q));
  SSM_CHECK(is_seq(k, 3, where) && k.size(0) == q.size(0) && k.size(1) >= q.size(1),
            "{}: k must be {} [B,S,n_kv_heads*head_dim] with B {} and S >= T {}, got {}", op, w, q.size(0), q.size(1),
            describe(k));
  SSM_CHECK(is_seq(v, 3, where) && v.shape() == k.shape(), "{}: v must be {} of k's shape {}, got {}", op, w,
            shape_str(k.shape()), describe(v));
  const int64_t head_dim = check_heads(op, p, q.size(2), k.size(2));
  return {q.size(0), q.size(1), k.size(1), p.n_heads, p.n_kv_heads, head_dim, p.window, softmax_scale(p, head_dim)};
}

// The outputs of attention: o of q's shape and placement, lse (optional) F32 [B,n_heads,T] contiguous.
inline void check_attention_outputs(const char* op, const AttentionDims& d, const Tensor& q, const Tensor& o,
                                    const Tensor* lse, const Placement& where = {}) {
  SSM_CHECK(is_seq(o, 3, where) && o.shape() == q.shape(),
            "{}: o must be {} of q's shape {} with a contiguous last dim, got {}", op, where.str(),
            shape_str(q.shape()), describe(o));
  if (!lse) return;
  const Shape want{d.batch, d.n_heads, d.T};
  SSM_CHECK(lse->defined() && lse->device() == where.device && lse->dtype() == DType::F32 && lse->shape() == want &&
                lse->is_contiguous(),
            "{}: lse must be F32 contiguous {}{}, got {}", op, shape_str(want), on_device(where.device),
            describe(*lse));
}

// attention_backward's tensors: q, k, v as for attention; o, dout and dq of q's shape and dk, dv of k's,
// with `where`'s dtype and device and a contiguous last dim; lse F32 contiguous [B,n_heads,T].
inline AttentionDims check_attention_backward(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                                              const Tensor& o, const Tensor& lse, const Tensor& dout,
                                              const AttentionParams& p, const Tensor& dq, const Tensor& dk,
                                              const Tensor& dv, const Placement& where = {}) {
  const AttentionDims d = check_attention(op, q, k, v, p, where);
  auto check_like = [&](const Tensor& t, const char* name, const Tensor& like, const char* like_name) {
    SSM_CHECK(is_seq(t, 3, where) && t.shape() == like.shape(),
              "{}: {} must be {} of {}'s shape {} with a contiguous last dim, got {}", op, name, where.str(), like_name,
              shape_str(like.shape()), describe(t));
  };
  check_like(o, "o", q, "q");
  check_like(dout, "dout", q, "q");
  check_like(dq, "dq", q, "q");
  check_like(dk, "dk", k, "k");
  check_like(dv, "dv", k, "k");
  const Shape lse_shape{d.batch, d.n_heads, d.T};
  SSM_CHECK(lse.defined() && lse.device() == where.device && lse.dtype() == DType::F32 && lse.shape() == lse_shape &&
                lse.is_contiguous(),
            "{}: lse must be F32 contiguous {}{}, got {}", op, shape_str(lse_shape), on_device(where.device),
            describe(lse));
  return d;
}

// attention_decode's tensors: q [B,n_heads*d], caches [B,C,n_kv_heads*d], lengths I32 [B] (its
// values are the caller's to check where they can be read), o of q's shape. T = 1, S = C.
inline AttentionDims check_attention_decode(const char* op, const Tensor& q, const Tensor& k_cache,
                                            const Tensor& v_cache, const Tensor& lengths, const AttentionParams& p,
                                            const Tensor& o, const Placement& where = {}) {
  const std::string w = where.str();
  SSM_CHECK(is_seq(q, 2, where), "{}: q must be {} [B,n_heads*head_dim] with a contiguous last dim, got {}", op, w,
            describe(q));
  const int64_t batch = q.size(0);
  SSM_CHECK(is_seq(k_cache, 3, where) && k_cache.size(0) == batch,
            "{}: k_cache must be {} [B,C,n_kv_heads*head_dim] with B {}, got {}", op, w, batch, describe(k_cache));
  SSM_CHECK(is_seq(v_cache, 3, where) && v_cache.shape() == k_cache.shape(),
            "{}: v_cache must be {} of k_cache's shape {}, got {}", op, w, shape_str(k_cache.shape()),
            describe(v_cache));
  const int64_t hd = check_heads(op, p, q.size(1), k_cache.size(2));
  SSM_CHECK(lengths.defined() && lengths.device() == where.device && lengths.dtype() == DType::I32 &&
                lengths.shape() == Shape{batch} && lengths.is_contiguous(),
            "{}: lengths must be I32 [{}]{}, got {}", op, batch, on_device(where.device), describe(lengths));
  SSM_CHECK(is_seq(o, 2, where) && o.shape() == q.shape(), "{}: o must be {} of q's shape {}, got {}", op, w,
            shape_str(q.shape()), describe(o));
  return {batch, 1, k_cache.size(1), p.n_heads, p.n_kv_heads, hd, p.window, softmax_scale(p, hd)};
}

}  // namespace ssm::ops::detail
