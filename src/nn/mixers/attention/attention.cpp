#include "nn/mixers/attention/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "nn/device_values.h"
#include "nn/init_util.h"
#include "nn/mixers/conv_ssm_state.h"

namespace ssm {

// ---- settings ----

const std::set<std::string>& AttentionSettings::config_keys() {
  static const std::set<std::string> keys = {
      "num_attention_heads", "num_key_value_heads", "head_dim", "rope_theta", "partial_rotary_factor",
      "position_embedding", "sliding_window", "attention_bias"};
  return keys;
}

AttentionSettings AttentionSettings::from_config(const ConfigReader& r, int64_t d_model) {
  AttentionSettings s;
  s.d_model = d_model;
  s.n_heads = r.positive("num_attention_heads");
  s.n_kv_heads = r.positive("num_key_value_heads", s.n_heads);
  s.head_dim = r.positive("head_dim", d_model / s.n_heads);
  const std::string position = r.string("position_embedding", "rope");
  SSM_CHECK(position == "rope" || position == "none", "{}: position_embedding must be \"rope\" or \"none\", got '{}'",
            r.source(), position);
  if (position == "rope") {
    s.rope_theta = r.number("rope_theta", 10000.0);
    s.rotary_dim = int64_t(double(s.head_dim) * r.number("partial_rotary_factor", 1.0));
  }
  s.window = r.integer("sliding_window", 0);
  s.qkv_bias = s.o_bias = r.boolean("attention_bias", false);
  s.validate(r.source());
  return s;
}

AttentionSettings AttentionSettings::sliding_from_config(const ConfigReader& r, int64_t d_model) {
  SSM_CHECK(r.integer("sliding_window", 0) > 0, "{}: a sliding-window layer needs sliding_window > 0", r.source());
  return from_config(r, d_model);
}

std::string AttentionSettings::describe() const {
  std::string text = fmt::format("{}: {} heads × {}, {} kv heads", kind(), n_heads, head_dim, n_kv_heads);
  if (rotary_dim > 0) text += fmt::format(", RoPE on {} channels (θ {})", rotary_dim, rope_theta);
  else text += ", no positional encoding";
  if (window > 0) text += fmt::format(", window {}", window);
  return text;
}

void AttentionSettings::validate(const std::string& source) const {
  SSM_CHECK(d_model > 0 && n_heads > 0 && n_kv_heads > 0 && head_dim > 0,
            "{}: bad attention sizes (heads {}, kv heads {}, head_dim {})", source, n_heads, n_kv_heads, head_dim);
  SSM_CHECK(n_heads % n_kv_heads == 0, "{}: attention heads ({}) must be a multiple of the key/value heads ({})",
            source, n_heads, n_kv_heads);
  SSM_CHECK(rotary_dim >= 0 && rotary_dim <= head_dim && rotary_dim % 2 == 0,
            "{}: the rotary width {} must be even and at most head_dim {}", source, rotary_dim, head_dim);
  SSM_CHECK(window >= 0, "{}: sliding_window must be >= 0, got {}", source, window);
}

std::unique_ptr<Mixer> AttentionSettings::build() const { return std::make_unique<AttentionMixer>(*this); }

// ---- KV cache ----

KvCache::KvCache(int64_t batch, int64_t width, int64_t window_, DType dtype, Device device)
    : k(Tensor::zeros({batch, window_, width}, dtype, device)),
      v(Tensor::zeros({batch, window_, width}, dtype, device)),
      seen(size_t(batch), 0),
      lengths(Tensor::zeros({batch}, DType::I32, device)),
      window(window_) {}

void KvCache::upload_lengths() {
  Tensor host = Tensor::empty({k.size(0)}, DType::I32);
  for (int64_t b = 0; b < k.size(0); ++b) host.data<int32_t>()[b] = int32_t(valid_rows(b));
  lengths.copy_from(host);
}

void KvCache::advance(int64_t tokens) {
  for (int64_t& count : seen) count += tokens;
  upload_lengths();
}

int64_t KvCache::valid_rows(int64_t b) const {
  return window > 0 ? std::min(seen[size_t(b)], window) : seen[size_t(b)];
}

void KvCache::grow(int64_t new_capacity) {
  const int64_t batch = k.size(0), old = capacity(), width = k.size(2);
  Tensor nk = Tensor::zeros({batch, new_capacity, width}, k.dtype(), k.device());
  Tensor nv = Tensor::zeros({batch, new_capacity, width}, v.dtype(), v.device());
  if (old > 0) {
    nk.slice(1, 0, old).copy_from(k);
    nv.slice(1, 0, old).copy_from(v);
  }
  k = nk;
  v = nv;
}

void KvCache::reserve(int64_t length) {
  if (window == 0 && length > capacity()) grow(length);
}

void KvCache::copy_sequence(int64_t from, MixerState& to, int64_t to_index) const {
  auto& target = state_as<KvCache>(&to, "KvCache::copy_sequence");
  SSM_CHECK(target.window == window && target.k.size(2) == k.size(2), "KvCache::copy_sequence: caches differ");
  const int64_t rows = window > 0 ? capacity() : seen[size_t(from)];
  target.reserve(rows);
  if (rows > 0) {
    target.k.slice(0, to_index, 1).slice(1, 0, rows).copy_from(k.slice(0, from, 1).slice(1, 0, rows));
    target.v.slice(0, to_index, 1).slice(1, 0, rows).copy_from(v.slice(0, from, 1).slice(1, 0, rows));
  }
  target.seen[size_t(to_index)] = seen[size_t(from)];
  target.upload_lengths();
}

// The rows a sequence that has seen `tokens` uses: all of a sliding window's ring, else one per token.
static int64_t rows_in_use(const KvCache& cache, int64_t tokens) {
  return cache.window > 0 ? cache.capacity() : tokens;
}

StateTensors KvCache::export_sequence(int64_t index) const {
  Tensor count = Tensor::empty({1}, DType::I64);
  count.data<int64_t>()[0] = seen[size_t(index)];
  const int64_t rows = rows_in_use(*this, seen[size_t(index)]);
  return {{"seen", count},
          {"k", host_copy(k.select(0, index).slice(0, 0, rows))},
          {"v", host_copy(v.select(0, index).slice(0, 0, rows))}};
}

void KvCache::import_sequence(int64_t index, const StateTensorMap& tensors) {
  const int64_t tokens = state_tensor(tensors, "seen", {1}, DType::I64, "KvCache").data<int64_t>()[0];
  SSM_CHECK(tokens >= 0, "KvCache: 'seen' is negative ({})", tokens);
  reserve(tokens);
  const int64_t rows = rows_in_use(*this, tokens);
  for (auto [name, cache] : {std::pair{"k", &k}, std::pair{"v", &v}})
    cache->select(0, index)
        .slice(0, 0, rows)
        .copy_from(state_tensor(tensors, name, {rows, cache->size(2)}, cache->dtype(), "KvCache"));
  seen[size_t(index)] = tokens;
  upload_lengths();
}

// ---- mixer ----

AttentionMixer::AttentionMixer(const AttentionSettings& settings)
    : s(settings),
      q_proj(s.d_model, s.n_heads * s.head_dim, s.qkv_bias),
      k_proj(s.d_model, s.n_kv_heads * s.head_dim, s.qkv_bias),
      v_proj(s.d_model, s.n_kv_heads * s.head_dim, s.qkv_bias),
      o_proj(s.n_heads * s.head_dim, s.d_model, s.o_bias) {}

void AttentionMixer::add_params(const std::string& prefix, ParamList& params) {
  q_proj.add_params(prefix + ".q_proj", params);
  k_proj.add_params(prefix + ".k_proj", params);
  v_proj.add_params(prefix + ".v_proj", params);
  o_proj.add_params(prefix + ".o_proj", params);
}

// GPT-2 / Llama: N(0, initializer_range), the output projection scaled by 1/sqrt(residual branches).
void AttentionMixer::init_parameters(Rng& rng, const InitOptions& o) {
  for (Linear* proj : {&q_proj, &k_proj, &v_proj}) init::normal(proj->weight, rng, o.initializer_range);
  const double rescale = o.rescale_prenorm_residual ? 1.0 / std::sqrt(double(o.residual_branches)) : 1.0;
  init::normal(o_proj.weight, rng, o.initializer_range * rescale);
  for (Linear* proj : {&q_proj, &k_proj, &v_proj, &o_proj})
    if (proj->bias.defined()) init::constant(proj->bias, 0.0f);
}

double AttentionMixer::matmul_macs_per_token() const {
  return double(s.d_model) * double(s.n_heads + 2 * s.n_kv_heads) * double(s.head_dim) +
         double(s.n_heads * s.head_dim) * double(s.d_model);
}

ops::AttentionParams AttentionMixer::params() const {
  ops::AttentionParams p;
  p.n_heads = s.n_heads;
  p.n_kv_heads = s.n_kv_heads;
  p.scale = s.softmax_scale;
  p.window = s.window;
  return p;
}

ops::RopeParams AttentionMixer::rope() const {
  ops::RopeParams p;
  p.head_dim = s.head_dim;
  p.rotary_dim = s.rotary_dim;
  p.theta = float(s.rope_theta);
  return p;
}

void AttentionMixer::project(const Tensor& x, const Tensor& positions, Tensor& q, Tensor& k, Tensor& v) const {
  q_proj.forward(x, q);
  k_proj.forward(x, k);
  v_proj.forward(x, v);
  if (s.key_scale != 1.0f) ops::scale(k, s.key_scale, k);
  if (s.rotary_dim > 0) {
    ops::rope(q, positions, rope());
    ops::rope(k, positions, rope());
  }
}

std::unique_ptr<MixerState> AttentionMixer::new_state(int64_t batch) const {
  return std::make_unique<KvCache>(batch, s.n_kv_heads * s.head_dim, s.window, activation_dtype(q_proj.weight),
                                   q_proj.weight.device());
}

void AttentionMixer::forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  KvCache* cache = state ? &state_as<KvCache>(state, "attention") : nullptr;
  const int64_t B = x.size(0), T = x.size(1), qw = s.n_heads * s.head_dim, kw = s.n_kv_heads * s.head_dim;
  const int64_t past = cache ? cache->seen[0] : 0;
  if (cache)
    for (int64_t b = 1; b < B; ++b)
      SSM_CHECK(cache->seen[size_t(b)] == past, "attention: a prefill batch must hold sequences at one position");
  const Tensor positions = host_filled_i32(ws, {B, T}, [&](int32_t* p) {
    for (int64_t i = 0; i < B * T; ++i) p[i] = int32_t(past + i % T);
  });
  const DType act = x.dtype();
  Tensor q = ws.take({B, T, qw}, act), k = ws.take({B, T, kw}, act), v = ws.take({B, T, kw}, act);
  Tensor o = ws.take({B, T, qw}, act);
  project(x, positions, q, k, v);
  if (!cache) {
    ops::attention(q, k, v, params(), o);
  } else if (s.window == 0) {
    // Append to the cache, then attend over everything it holds.
    cache->reserve(past + T);
    Tensor ck = cache->k.slice(1, past, T), cv = cache->v.slice(1, past, T);
    ck.copy_from(k);
    cv.copy_from(v);
    ops::attention(q, cache->k.slice(1, 0, past + T), cache->v.slice(1, 0, past + T), params(), o);
  } else {
    // The ring holds the last `window` positions: the ones still visible to the first query come
    // first, in position order, then the new keys; the newest `window` keys go back into the ring.
    const int64_t kept = std::min(past, s.window - 1), W = s.window;
    Tensor keys = ws.take({B, kept + T, kw}, act), values = ws.take({B, kept + T, kw}, act);
    for (int64_t i = 0; i < kept; ++i) {
      const int64_t row = cache->row_of(past - kept + i);
      keys.slice(1, i, 1).copy_from(cache->k.slice(1, row, 1));
      values.slice(1, i, 1).copy_from(cache->v.slice(1, row, 1));
    }
    keys.slice(1, kept, T).copy_from(k);
    values.slice(1, kept, T).copy_from(v);
    ops::attention(q, keys, values, params(), o);
    for (int64_t t = std::max<int64_t>(0, T - W); t < T; ++t) {
      const int64_t row = cache->row_of(past + t);
      cache->k.slice(1, row, 1).copy_from(k.slice(1, t, 1));
      cache->v.slice(1, row, 1).copy_from(v.slice(1, t, 1));
    }
  }
  if (cache) cache->advance(T);
  o_proj.forward(o, y);
}

void AttentionMixer::step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  KvCache& cache = state_as<KvCache>(state, "attention");
  const int64_t B = x.size(0), qw = s.n_heads * s.head_dim, kw = s.n_kv_heads * s.head_dim;
  const Tensor positions = host_filled_i32(ws, {B}, [&](int32_t* p) {
    for (int64_t b = 0; b < B; ++b) p[b] = int32_t(cache.seen[size_t(b)]);
  });
  int64_t longest = 0;
  for (int64_t b = 0; b < B; ++b) longest = std::max(longest, cache.seen[size_t(b)] + 1);
  // Grows only when the caller did not reserve: doubling keeps that rare.
  if (s.window == 0 && longest > cache.capacity()) cache.reserve(std::max(longest, 2 * cache.capacity()));
  const DType act = x.dtype();
  Tensor q = ws.take({B, qw}, act), k = ws.take({B, kw}, act), v = ws.take({B, kw}, act), o = ws.take({B, qw}, act);
  project(x, positions, q, k, v);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t row = cache.row_of(cache.seen[size_t(b)]);
    cache.k.select(0, b).slice(0, row, 1).copy_from(k.slice(0, b, 1));
    cache.v.select(0, b).slice(0, row, 1).copy_from(v.slice(0, b, 1));
  }
  cache.advance(1);
  ops::attention_decode(q, cache.k, cache.v, cache.lengths, params(), o);
  o_proj.forward(o, y);
}

}  // namespace ssm
