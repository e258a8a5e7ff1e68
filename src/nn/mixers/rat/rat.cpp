#include "nn/mixers/rat/rat.h"

#include <algorithm>
#include <cmath>

#include "nn/init_util.h"
#include "nn/mixers/conv_ssm_state.h"

namespace ssm {

namespace {
// The most tokens any of the first `batch` sequences of the cache has seen.
int64_t furthest_position(const ops::RatCache& cache, int64_t batch) {
  SSM_CHECK(cache.tokens.size(0) == batch, "rat: the state holds {} sequences, the input {}", cache.tokens.size(0),
            batch);
  const int64_t* tokens = cache.tokens.data<int64_t>();
  return batch == 0 ? 0 : *std::max_element(tokens, tokens + batch);
}
}  // namespace

// ---- settings ----

const std::set<std::string>& RatSettings::config_keys() {
  static const std::set<std::string> keys = {"num_heads", "head_dim", "qk_groups", "chunk_size", "rope_theta"};
  return keys;
}

RatSettings RatSettings::from_config(const ConfigReader& r, int64_t d_model) {
  RatSettings s;
  s.d_model = d_model;
  if (r.has("num_heads")) {
    s.n_heads = r.positive("num_heads");
    s.head_dim = r.positive("head_dim", d_model / s.n_heads);
  } else {
    s.head_dim = r.positive("head_dim", 64);
    s.n_heads = d_model / s.head_dim;
  }
  s.n_groups = r.positive("qk_groups", 2);
  s.chunk_size = r.positive("chunk_size", 16);
  s.rope_theta = r.number("rope_theta", 10000.0);
  s.validate(r.source());
  return s;
}

std::string RatSettings::describe() const {
  return fmt::format("rat: {} heads × {}, {} q/k group(s), chunk {}, RoPE across chunks (θ {})", n_heads, head_dim,
                     n_groups, chunk_size, rope_theta);
}

void RatSettings::validate(const std::string& source) const {
  SSM_CHECK(d_model > 0 && n_heads > 0 && head_dim > 0 && n_heads * head_dim == d_model,
            "{}: RAT heads ({}) × head_dim ({}) must equal hidden_size ({})", source, n_heads, head_dim, d_model);
  SSM_CHECK(head_dim % 2 == 0, "{}: RAT head_dim must be even (the rotation pairs channels), got {}", source,
            head_dim);
  SSM_CHECK(n_groups > 0 && n_heads % n_groups == 0, "{}: RAT heads ({}) must be a multiple of qk_groups ({})", source,
            n_heads, n_groups);
  SSM_CHECK(chunk_size > 0, "{}: RAT chunk_size must be positive, got {}", source, chunk_size);
  SSM_CHECK(std::isfinite(rope_theta) && rope_theta > 0, "{}: RAT rope_theta must be positive, got {}", source,
            rope_theta);
}

std::unique_ptr<Mixer> RatSettings::build() const { return std::make_unique<RatMixer>(*this); }

// ---- state ----

RatState::RatState(int64_t batch, int64_t width, int64_t chunk_size_, Device device)
    : cache(ops::RatCache::zeros(batch, width, 0, device)), chunk_size(chunk_size_) {}

int64_t RatState::bytes() const {
  return int64_t(cache.chunk_keys.nbytes() + cache.chunk_values.nbytes() + cache.key.nbytes() + cache.value.nbytes() +
                 cache.tokens.nbytes());
}

void RatState::copy_sequence(int64_t from, MixerState& to, int64_t to_index) const {
  auto& target = state_as<RatState>(&to, "RatState::copy_sequence");
  SSM_CHECK(target.chunk_size == chunk_size && target.cache.key.size(1) == cache.key.size(1),
            "RatState::copy_sequence: states of different RAT layers");
  SSM_CHECK(from >= 0 && from < cache.tokens.size(0) && to_index >= 0 && to_index < target.cache.tokens.size(0),
            "RatState::copy_sequence: sequence {} of {} into {} of {}", from, cache.tokens.size(0), to_index,
            target.cache.tokens.size(0));
  const int64_t tokens = cache.tokens.data<int64_t>()[from], finished = tokens / chunk_size;
  target.cache.reserve(finished);
  target.cache.chunk_keys.select(0, to_index).slice(0, 0, finished).copy_from(
      cache.chunk_keys.select(0, from).slice(0, 0, finished));
  target.cache.chunk_values.select(0, to_index).slice(0, 0, finished).copy_from(
      cache.chunk_values.select(0, from).slice(0, 0, finished));
  copy_batch_row(cache.key, from, target.cache.key, to_index);
  copy_batch_row(cache.value, from, target.cache.value, to_index);
  target.cache.set_tokens(to_index, tokens);
}

StateTensors RatState::export_sequence(int64_t index) const {
  const int64_t tokens = cache.tokens.data<int64_t>()[index], finished = tokens / chunk_size;
  Tensor count = Tensor::empty({1}, DType::I64);
  count.data<int64_t>()[0] = tokens;
  return {{"tokens", count},
          {"key", export_row(cache.key, index)},
          {"value", export_row(cache.value, index)},
          {"chunk_keys", host_copy(cache.chunk_keys.select(0, index).slice(0, 0, finished))},
          {"chunk_values", host_copy(cache.chunk_values.select(0, index).slice(0, 0, finished))}};
}

void RatState::import_sequence(int64_t index, const StateTensorMap& tensors) {
  const int64_t tokens = state_tensor(tensors, "tokens", {1}, DType::I64, "RatState").data<int64_t>()[0];
  SSM_CHECK(tokens >= 0, "RatState: 'tokens' is negative ({})", tokens);
  const int64_t finished = tokens / chunk_size, width = cache.key.size(1);
  import_row(tensors, "key", cache.key, index, "RatState");
  import_row(tensors, "value", cache.value, index, "RatState");
  cache.reserve(finished);
  for (auto [name, ends] : {std::pair{"chunk_keys", &cache.chunk_keys}, std::pair{"chunk_values", &cache.chunk_values}})
    ends->select(0, index)
        .slice(0, 0, finished)
        .copy_from(state_tensor(tensors, name, {finished, width}, DType::F32, "RatState"));
  cache.set_tokens(index, tokens);
}

// ---- mixer ----

RatMixer::RatMixer(const RatSettings& settings)
    : s(settings), in_proj(s.d_model, s.in_proj_width(), false), out_proj(s.width(), s.d_model, false) {}

void RatMixer::add_params(const std::string& prefix, ParamList& params) {
  in_proj.add_params(prefix + ".in_proj", params);
  params.push_back({prefix + ".gate_bias", {s.width()}, &gate_bias, ParamKind::Vector, false});
  out_proj.add_params(prefix + ".out_proj", params);
}

// The authors ("fixed" init): every projection N(0, initializer_range); here out_proj is also scaled
// by 1/sqrt(residual branches) as the engine's other mixers. gate_bias = log U(1, L−1), so that the
// forget gate σ(g + gate_bias) starts near (L−1)/L at most: the running state spans the chunk. At
// L = 1 the authors leave gate_bias uninitialised (torch.empty); here it is 0 (σ = 1/2 at g = 0).
void RatMixer::init_parameters(Rng& rng, const InitOptions& o) {
  init::normal(in_proj.weight, rng, o.initializer_range);
  const double rescale = o.rescale_prenorm_residual ? 1.0 / std::sqrt(double(o.residual_branches)) : 1.0;
  init::normal(out_proj.weight, rng, o.initializer_range * rescale);
  float* bias = gate_bias.data<float>();
  for (int64_t i = 0; i < gate_bias.numel(); ++i)
    bias[i] = s.chunk_size > 1 ? std::log(rng.uniform(1.0f, float(s.chunk_size - 1))) : 0.0f;
}

double RatMixer::matmul_macs_per_token() const {
  return double(s.d_model) * double(s.in_proj_width()) + double(s.width()) * double(s.d_model);
}

std::unique_ptr<MixerState> RatMixer::new_state(int64_t batch) const {
  return std::make_unique<RatState>(batch, s.width(), s.chunk_size, in_proj.weight.device());
}

ops::RatInputs RatMixer::rat_inputs(const Tensor& projected) const {
  const int64_t axis = projected.dim() - 1;
  ops::RatInputs in;
  in.v = projected.slice(axis, v_offset(), s.width());
  in.g = projected.slice(axis, g_offset(), s.width());
  in.q = projected.slice(axis, q_offset(), s.qk_width());
  in.k = projected.slice(axis, k_offset(), s.qk_width());
  in.gate_bias = gate_bias;
  in.n_heads = s.n_heads;
  in.n_groups = s.n_groups;
  in.chunk_size = s.chunk_size;
  in.rope_theta = float(s.rope_theta);
  return in;
}

Tensor RatMixer::z_of(const Tensor& projected) const {
  return projected.slice(projected.dim() - 1, z_offset(), s.width());
}

void RatMixer::forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  ops::RatCache* cache = state ? &state_as<RatState>(state, "rat").cache : nullptr;
  const int64_t B = x.size(0), T = x.size(1);
  // Room for every chunk finished by the end of this call (sequences may be at different positions).
  if (cache) cache->reserve((furthest_position(*cache, B) + T) / s.chunk_size);
  Tensor projected = ws.take({B, T, s.in_proj_width()}, x.dtype());
  in_proj.forward(x, projected);
  Tensor mixed = ws.take({B, T, s.width()}, x.dtype());
  ops::rat(rat_inputs(projected), cache, mixed);
  ops::gated_activation(ops::Activation::Sigmoid, z_of(projected), mixed, 1.0f, mixed);
  out_proj.forward(mixed, y);
}

void RatMixer::step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const {
  WorkspaceScope scope(ws);
  ops::RatCache& cache = state_as<RatState>(state, "rat").cache;
  const int64_t B = x.size(0);
  // Grows (twofold) only when the caller did not reserve.
  cache.reserve((furthest_position(cache, B) + 1) / s.chunk_size);
  Tensor projected = ws.take({B, s.in_proj_width()}, x.dtype());
  in_proj.forward(x, projected);
  Tensor mixed = ws.take({B, s.width()}, x.dtype());
  ops::rat_step(rat_inputs(projected), cache, mixed);
  ops::gated_activation(ops::Activation::Sigmoid, z_of(projected), mixed, 1.0f, mixed);
  out_proj.forward(mixed, y);
}

}  // namespace ssm
