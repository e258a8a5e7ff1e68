#include "nn/mixer_reference.h"

#include <cmath>

#include "core/error.h"
#include "nn/mixers/attention/attention.h"
#include "nn/mixers/mamba1/mamba1.h"
#include "nn/mixers/mamba2/mamba2.h"
#include "nn/mixers/mamba3/mamba3.h"
#include "nn/mixers/mlp/mlp.h"
#include "nn/mixers/mlstm/mlstm.h"
#include "nn/mixers/moe/moe.h"
#include "nn/mixers/rat/rat.h"
#include "nn/mixers/slstm/slstm.h"
#include "ops/ref/activation.h"
#include "ops/ref/attention.h"
#include "ops/ref/conv1d.h"
#include "ops/ref/gated_rmsnorm.h"
#include "ops/ref/linear.h"
#include "ops/ref/mamba3.h"
#include "ops/ref/mlstm.h"
#include "ops/ref/moe.h"
#include "ops/ref/rat.h"
#include "ops/ref/rope.h"
#include "ops/ref/rmsnorm.h"
#include "ops/ref/selective_scan.h"
#include "ops/ref/slstm.h"
#include "ops/ref/ssd.h"

namespace ssm::testing {

Vec columns(const Vec& m, int64_t rows, int64_t ncols, int64_t c0, int64_t width) {
  Vec out(static_cast<size_t>(rows * width));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < width; ++i) out[size_t(r * width + i)] = m[size_t(r * ncols + c0 + i)];
  return out;
}

namespace {

// The parameter `name` under the mixer's prefix, or an empty vector for an absent optional one.
struct Named {
  const Params& P;
  std::string prefix;
  const Vec& operator()(const std::string& name) const {
    static const Vec empty;
    auto it = P.find(prefix + "." + name);
    return it == P.end() ? empty : it->second;
  }
};

Vec neg_exp(const Vec& v) {
  Vec out;
  for (double a : v) out.push_back(-std::exp(a));
  return out;
}

void set_columns(Vec& m, int64_t rows, int64_t ncols, int64_t c0, const Vec& part, int64_t width) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < width; ++i) m[size_t(r * ncols + c0 + i)] = part[size_t(r * width + i)];
}

Vec mamba1(const Mamba1Settings& s, const Named& p, const Vec& x, int64_t Bt, int64_t T) {
  const int64_t M = Bt * T, D = s.d_model, Di = s.d_inner, R = s.dt_rank, N = s.d_state, W = R + 2 * N;
  const Vec xz = ref::linear(x, p("in_proj.weight"), p("in_proj.bias"), M, 2 * Di, D);
  const Vec u = ref::conv1d_causal(columns(xz, M, 2 * Di, 0, Di), p("conv1d.weight"), p("conv1d.bias"), {}, true, Bt, T,
                                   Di, s.d_conv)
                    .y;
  Vec xdbl = ref::linear(u, p("x_proj.weight"), {}, M, W, Di);
  if (s.dt_bc_norms) {
    set_columns(xdbl, M, W, 0, ref::rmsnorm(columns(xdbl, M, W, 0, R), p("dt_layernorm.weight"), M, R, s.norm_eps), R);
    set_columns(xdbl, M, W, R, ref::rmsnorm(columns(xdbl, M, W, R, N), p("b_layernorm.weight"), M, N, s.norm_eps), N);
    set_columns(xdbl, M, W, R + N,
                ref::rmsnorm(columns(xdbl, M, W, R + N, N), p("c_layernorm.weight"), M, N, s.norm_eps), N);
  }
  ref::SelectiveScanRefInputs in;
  in.u = u;
  in.delta = ref::linear(columns(xdbl, M, W, 0, R), p("dt_proj.weight"), {}, M, Di, R);
  in.delta_bias = p("dt_proj.bias");
  in.A = neg_exp(p("A_log"));
  in.B = columns(xdbl, M, W, R, N);
  in.C = columns(xdbl, M, W, R + N, N);
  in.Dskip = p("D");
  in.z = columns(xz, M, 2 * Di, Di, Di);
  const Vec y = ref::selective_scan({Bt, T, Di, N}, in).y;
  return ref::linear(y, p("out_proj.weight"), p("out_proj.bias"), M, D, Di);
}

Vec mamba2(const Mamba2Settings& s, const Named& p, const Vec& x, int64_t Bt, int64_t T) {
  const int64_t M = Bt * T, D = s.d_model, Di = s.d_inner, G = s.n_groups, N = s.d_state, H = s.n_heads;
  const int64_t Cc = s.conv_channels(), W = s.in_proj_width();
  Vec zx = ref::linear(x, p("in_proj.weight"), p("in_proj.bias"), M, W, D);
  if (!s.in_proj_part_scales.empty()) {
    const int64_t widths[5] = {Di, Di, G * N, G * N, H};
    for (int64_t r = 0; r < M; ++r)
      for (int part = 0, col = 0; part < 5; ++part)
        for (int64_t i = 0; i < widths[part]; ++i, ++col) zx[size_t(r * W + col)] *= s.in_proj_part_scales[size_t(part)];
  }
  const Vec xbc =
      ref::conv1d_causal(columns(zx, M, W, Di, Cc), p("conv1d.weight"), p("conv1d.bias"), {}, true, Bt, T, Cc, s.d_conv)
          .y;
  ref::SsdRefInputs in;
  in.x = columns(xbc, M, Cc, 0, Di);
  in.B = columns(xbc, M, Cc, Di, G * N);
  in.C = columns(xbc, M, Cc, Di + G * N, G * N);
  in.dt = columns(zx, M, W, Di + Cc, H);
  in.dt_bias = p("dt_bias");
  in.A = neg_exp(p("A_log"));
  in.D = p("D");
  in.dt_min = s.dt_limit_min;
  in.dt_max = s.dt_limit_max;
  const Vec y = ref::ssd({Bt, T, H, s.head_dim, G, N}, in).y;
  const Vec z = columns(zx, M, W, 0, Di);
  Vec gated;
  if (s.gated_norm) {
    gated = ref::gated_rmsnorm(y, z, p("norm.weight"), M, Di, Di / G, s.norm_before_gate, s.norm_eps);
  } else {
    gated.resize(y.size());
    for (size_t i = 0; i < y.size(); ++i) gated[i] = y[i] * z[i] / (1.0 + std::exp(-z[i]));
  }
  return ref::linear(gated, p("out_proj.weight"), p("out_proj.bias"), M, D, Di);
}

// mamba_ssm's Mamba3: in_proj → [z, x, B, C, dt, A, trap, angles]; B/C RMSNorm per (rank, group);
// MIMO's x_r, z_r; the recurrence; y_r · silu(z_r) or the per-head gated norm; MIMO's Σ_r; out_proj.
Vec mamba3(const Mamba3Settings& s, const Named& p, const Vec& x, int64_t Bt, int64_t T) {
  const int64_t M = Bt * T, D = s.d_model, Di = s.d_inner, G = s.n_groups, N = s.d_state, H = s.n_heads;
  const int64_t W = s.in_proj_width(), S = s.n_angles, R = s.mimo_rank, P = s.head_dim;
  const Vec proj = ref::linear(x, p("in_proj.weight"), {}, M, W, D);
  int64_t column = 0;
  const auto part = [&](int64_t width) {
    column += width;
    return columns(proj, M, W, column - width, width);
  };
  Vec z = part(Di);
  ref::Mamba3RefInputs in;
  in.x = part(Di);
  in.B = ref::rmsnorm(part(R * G * N), p("B_norm.weight"), M * R * G, N, Mamba3Mixer::kNormEps);
  in.C = ref::rmsnorm(part(R * G * N), p("C_norm.weight"), M * R * G, N, Mamba3Mixer::kNormEps);
  in.dt = part(H);
  in.A = part(H);
  in.trap = part(H);
  in.angles = part(S);
  in.dt_bias = p("dt_bias");
  in.B_bias = p("B_bias");
  in.C_bias = p("C_bias");
  in.D = p("D");
  in.A_floor = double(float(s.A_floor));
  if (s.mimo) {
    in.x = ref::mamba3_mimo_expand(in.x, p("mimo_x"), M, H, R, P);
    z = ref::mamba3_mimo_expand(z, p("mimo_z"), M, H, R, P);
  }
  const Vec y = ref::mamba3({Bt, T, H, P, G, N, S, R, s.mimo}, in);
  Vec gated;
  if (s.outproj_norm) {
    gated = ref::gated_rmsnorm(y, z, p("norm.weight"), M * R, Di, P, true, Mamba3Mixer::kNormEps);
  } else {
    gated.resize(y.size());
    for (size_t i = 0; i < y.size(); ++i) gated[i] = y[i] * z[i] / (1.0 + std::exp(-z[i]));
  }
  if (s.mimo) gated = ref::mamba3_mimo_contract(gated, p("mimo_o"), M, H, R, P);
  return ref::linear(gated, p("out_proj.weight"), {}, M, D, Di);
}

Vec attention(const AttentionSettings& s, const Named& p, const Vec& x, int64_t Bt, int64_t T) {
  const int64_t M = Bt * T, D = s.d_model, qw = s.n_heads * s.head_dim, kw = s.n_kv_heads * s.head_dim;
  Vec q = ref::linear(x, p("q_proj.weight"), p("q_proj.bias"), M, qw, D);
  Vec k = ref::linear(x, p("k_proj.weight"), p("k_proj.bias"), M, kw, D);
  const Vec v = ref::linear(x, p("v_proj.weight"), p("v_proj.bias"), M, kw, D);
  for (double& e : k) e *= s.key_scale;
  if (s.rotary_dim > 0) {
    std::vector<int32_t> positions(static_cast<size_t>(M));
    for (int64_t i = 0; i < M; ++i) positions[size_t(i)] = int32_t(i % T);
    q = ref::rope(q, positions, qw, s.head_dim, s.rotary_dim, float(s.rope_theta));
    k = ref::rope(k, positions, kw, s.head_dim, s.rotary_dim, float(s.rope_theta));
  }
  ref::AttentionDims dims;
  dims.batch = Bt;
  dims.T = dims.S = T;
  dims.n_heads = s.n_heads;
  dims.n_kv_heads = s.n_kv_heads;
  dims.head_dim = s.head_dim;
  dims.window = s.window;
  dims.scale = s.softmax_scale > 0 ? s.softmax_scale : 1.0 / std::sqrt(double(s.head_dim));
  const Vec o = ref::attention(q, k, v, dims);
  return ref::linear(o, p("o_proj.weight"), p("o_proj.bias"), M, D, qw);
}

Vec mlp(const MlpSettings& s, const Named& p, const Vec& x, int64_t M) {
  const auto proj = [&](const std::string& name, const Vec& in, int64_t out, int64_t width) {
    return ref::linear(in, p(name + ".weight"), p(name + ".bias"), M, out, width);
  };
  const Vec up = proj(s.up_name, x, s.d_ff, s.d_model);
  const Vec hidden = s.gated ? ref::gated_activation(s.activation, proj(s.gate_name, x, s.d_ff, s.d_model), up,
                                                     s.gate_scale)
                             : ref::activation(s.activation, up);
  return proj(s.down_name, hidden, s.d_model, s.d_ff);
}

// Every expert on every token, combined with the routing weights (a plain form of the dispatch).
Vec moe(const MoeSettings& s, const Named& p, const Vec& x, int64_t M) {
  const int64_t D = s.d_model, E = s.n_experts, k = s.router.top_k, Dx = s.expert.d_model;
  const std::string router = s.router_name + ".";
  const Vec logits = ref::linear(x, p(router + "weight"), {}, M, E, D);
  const ref::MoeRouting routing = ref::moe_route(logits, p(router + "e_score_correction_bias"), M, E, s.router);
  const Vec latent = s.latent_size > 0 ? ref::linear(x, p("fc1_latent_proj.weight"), p("fc1_latent_proj.bias"), M,
                                                     Dx, D)
                                       : x;
  Vec expert_out(static_cast<size_t>(M * k * Dx));
  for (int64_t e = 0; e < E; ++e) {
    const Vec out = mlp(s.expert, Named{p.P, p.prefix + ".experts." + std::to_string(e)}, latent, M);
    for (int64_t t = 0; t < M; ++t)
      for (int64_t slot = 0; slot < k; ++slot)
        if (routing.indices[size_t(t * k + slot)] == e)
          for (int64_t d = 0; d < Dx; ++d) expert_out[size_t((t * k + slot) * Dx + d)] = out[size_t(t * Dx + d)];
  }
  Vec y = ref::moe_combine(expert_out, routing.weights, M, k, Dx);
  if (s.latent_size > 0) y = ref::linear(y, p("fc2_latent_proj.weight"), p("fc2_latent_proj.bias"), M, D, Dx);
  if (s.shared.d_ff > 0) {
    const Vec common = mlp(s.shared, Named{p.P, p.prefix + ".shared_experts"}, x, M);
    for (size_t i = 0; i < y.size(); ++i) y[i] += common[i];
  }
  return y;
}

// The authors' split of in_proj's output: z, v, g, q, k; y = out_proj(σ(z) ⊙ rat(q, k, v, g)).
Vec rat(const RatSettings& s, const Named& p, const Vec& x, int64_t Bt, int64_t T) {
  const int64_t M = Bt * T, D = s.d_model, W = s.width(), QK = s.qk_width(), P = s.in_proj_width();
  const Vec zvgqk = ref::linear(x, p("in_proj.weight"), {}, M, P, D);
  ref::RatRefInputs in;
  in.v = columns(zvgqk, M, P, W, W);
  in.g = columns(zvgqk, M, P, 2 * W, W);
  in.q = columns(zvgqk, M, P, 3 * W, QK);
  in.k = columns(zvgqk, M, P, 3 * W + QK, QK);
  in.gate_bias = p("gate_bias");
  in.rope_theta = s.rope_theta;
  const Vec y = ref::rat({Bt, T, s.n_heads, s.n_groups, s.head_dim, s.chunk_size}, in);
  const Vec gated = ref::gated_activation(ops::Activation::Sigmoid, columns(zvgqk, M, P, 0, W), y, 1.0);
  return ref::linear(gated, p("out_proj.weight"), {}, M, D, W);
}

// transformers' xLSTMLayer: y = out_proj(σ(o) ⊙ multihead_norm(mlstm(q, k, v, cap(i), cap(f)))).
Vec mlstm(const MlstmSettings& s, const Named& p, const Vec& x, int64_t Bt, int64_t T) {
  const int64_t M = Bt * T, D = s.d_model, H = s.n_heads;
  const auto proj = [&](const std::string& name, int64_t out) {
    return ref::linear(x, p(name + ".weight"), p(name + ".bias"), M, out, D);
  };
  const auto gate = [&](const std::string& name) {
    const Vec pre = proj(name, H);
    return s.gate_soft_cap > 0 ? ref::soft_cap(pre, s.gate_soft_cap) : pre;
  };
  ref::MlstmRefInputs in;
  in.q = proj("q", s.qk_dim);
  in.k = proj("k", s.qk_dim);
  in.v = proj("v", s.v_dim);
  in.i = gate("igate_preact");
  in.f = gate("fgate_preact");
  in.eps = s.eps;
  const Vec h = ref::mlstm({Bt, T, H, s.qk_head_dim(), s.v_head_dim()}, in);
  const Vec normed = ref::group_layernorm(h, p("multihead_norm.weight"), {}, M, s.v_dim, s.v_head_dim(), s.norm_eps);
  const Vec gated = ref::gated_activation(ops::Activation::Sigmoid, proj("ogate_preact", s.v_dim), normed, 1.0);
  return ref::linear(gated, p("out_proj.weight"), {}, M, D, s.v_dim);
}

// NX-AI's sLSTMLayer: wx = [fgate(xc), igate(xc), zgate(x), ogate(x)] (headwise) with xc = silu(conv(x)),
// y = group_norm(slstm(wx)) with the norm's weight 1 + w.
Vec slstm(const SlstmSettings& s, const Named& p, const Vec& x, int64_t Bt, int64_t T) {
  const int64_t M = Bt * T, D = s.d_model, H = s.n_heads, dh = s.head_dim();
  const Vec xc = s.conv_kernel > 0 ? ref::conv1d_causal(x, p("conv1d.conv.weight"), p("conv1d.conv.bias"), {}, true,
                                                        Bt, T, D, s.conv_kernel)
                                         .y
                                   : x;
  ref::SlstmRefInputs in;
  in.wx.assign(size_t(M * 4 * D), 0.0);
  const auto headwise = [&](const Vec& input, const std::string& name, int64_t gate) {
    const Vec& w = p(name + ".weight");  // [H, dh, dh]
    for (int64_t h = 0; h < H; ++h) {
      const Vec wh(w.begin() + h * dh * dh, w.begin() + (h + 1) * dh * dh);
      set_columns(in.wx, M, 4 * D, gate * D + h * dh, ref::linear(columns(input, M, D, h * dh, dh), wh, {}, M, dh, dh),
                  dh);
    }
  };
  headwise(xc, "fgate", 0);
  headwise(xc, "igate", 1);
  headwise(x, "zgate", 2);
  headwise(x, "ogate", 3);
  in.R = p("slstm_cell._recurrent_kernel_");
  in.bias = p("slstm_cell._bias_");
  Vec scale = p("group_norm.weight");
  for (double& w : scale) w += 1.0;
  return ref::group_layernorm(ref::slstm({Bt, T, H, dh}, in), scale, {}, M, D, dh, SlstmSettings::kNormEps);
}

}  // namespace

Vec reference_mixer(const MixerPlan& mixer, const Params& P, const Vec& x, int64_t Bt, int64_t T) {
  const Named named{P, mixer.prefix};
  const MixerSettings* s = mixer.settings.get();
  if (const auto* m1 = dynamic_cast<const Mamba1Settings*>(s)) return mamba1(*m1, named, x, Bt, T);
  if (const auto* m2 = dynamic_cast<const Mamba2Settings*>(s)) return mamba2(*m2, named, x, Bt, T);
  if (const auto* m3 = dynamic_cast<const Mamba3Settings*>(s)) return mamba3(*m3, named, x, Bt, T);
  if (const auto* a = dynamic_cast<const AttentionSettings*>(s)) return attention(*a, named, x, Bt, T);
  if (const auto* m = dynamic_cast<const MlpSettings*>(s)) return mlp(*m, named, x, Bt * T);
  if (const auto* e = dynamic_cast<const MoeSettings*>(s)) return moe(*e, named, x, Bt * T);
  if (const auto* r = dynamic_cast<const RatSettings*>(s)) return rat(*r, named, x, Bt, T);
  if (const auto* l = dynamic_cast<const MlstmSettings*>(s)) return mlstm(*l, named, x, Bt, T);
  if (const auto* l = dynamic_cast<const SlstmSettings*>(s)) return slstm(*l, named, x, Bt, T);
  fail("reference_mixer: no reference for mixer kind '{}'", s->kind());
}

}  // namespace ssm::testing
