#include "bench/layer_bench.h"

#include <chrono>
#include <cstdio>

#include <fmt/format.h>

#include "core/workspace.h"
#include "model/language_model.h"
#include "train/init.h"

namespace ssm::bench {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// A stack of `layers` mixers of one kind at width d, the project's own model type, no MLPs.
// "mamba3-mimo" is the mamba3 kind with is_mimo.
ModelConfig stack_of(const std::string& kind, int64_t d, int64_t layers) {
  const int64_t heads = d / 64;
  const bool mimo = kind == "mamba3-mimo";
  Json config = {{"model_type", "ssm"}, {"vocab_size", 256}, {"hidden_size", d}, {"layers", Json::array()}};
  for (int64_t i = 0; i < layers; ++i) config["layers"].push_back(mimo ? "mamba3" : kind);
  config["attention"] = {{"num_attention_heads", heads}, {"head_dim", 64}};
  config["rat"] = {{"num_heads", heads}, {"head_dim", 64}, {"qk_groups", 2}, {"chunk_size", 16}};
  config["mamba2"] = {{"head_dim", 64}, {"state_size", 128}, {"expand", 2}};
  config["mamba3"] = {{"headdim", 64}, {"d_state", 128}, {"expand", 2}};
  if (mimo) config["mamba3"].update({{"is_mimo", true}, {"mimo_rank", 4}, {"chunk_size", 16}});
  config["mlstm"] = {{"num_heads", heads}, {"qk_dim_factor", 0.5}, {"v_dim_factor", 1.0}, {"chunk_size", 64}};
  config["slstm"] = {{"num_heads", heads}, {"conv1d_kernel_size", 4}};
  return ModelConfig::from_json(config, "layer bench (" + kind + ")");
}

Tensor ids_of(int64_t batch, int64_t length) {
  Tensor ids = Tensor::empty({batch, length}, DType::I32);
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int32_t>()[i] = int32_t((i * 7919 + 13) % 256);
  return ids;
}

std::string bytes_text(double bytes) {
  return bytes >= 1048576 ? fmt::format("{:.1f} MiB", bytes / 1048576) : fmt::format("{:.0f} KiB", bytes / 1024);
}

}  // namespace

std::string layer_bench(const LayerBenchOptions& o) {
  std::string table = "| layers | prefill tok/s (T) | context | decode ms/token (batch) | state per sequence |\n"
                      "| --- | --- | --- | --- | --- |\n";
  for (const std::string& kind : o.kinds) {
    LanguageModel model(stack_of(kind, o.d_model, o.layers));
    init_parameters(model, 7);
    Workspace ws;
    std::string prefill;
    for (int64_t length : o.prefill_lengths) {
      const Tensor ids = ids_of(1, length);
      ws.reset();
      model.forward(ids, nullptr, false, ws);  // plans the workspace at this length
      ws.reset();
      const auto start = Clock::now();
      model.forward(ids, nullptr, false, ws);
      prefill += fmt::format("{}{:.0f} ({})", prefill.empty() ? "" : ", ", double(length) / seconds_since(start), length);
    }
    for (int64_t context : o.contexts) {
      std::string decode;
      for (int64_t batch : o.batches) {
        ModelState state = model.new_state(batch);
        state.reserve(context + o.decode_tokens + 1);
        ws.reset();
        model.forward(ids_of(batch, context), &state, false, ws);
        Tensor step_ids = Tensor::zeros({batch}, DType::I32);
        ws.reset();
        model.step(step_ids, state, ws);  // warm-up
        const auto start = Clock::now();
        for (int64_t i = 0; i < o.decode_tokens; ++i) {
          ws.reset();
          model.step(step_ids, state, ws);
        }
        decode += fmt::format("{}{:.2f} ({})", decode.empty() ? "" : ", ",
                              1000 * seconds_since(start) / double(o.decode_tokens), batch);
      }
      table += fmt::format("| {} x {} (d {}) | {} | {} | {} | {} |\n", o.layers, kind, o.d_model,
                           context == o.contexts.front() ? prefill : "", context, decode,
                           bytes_text(model.state_bytes(context)));
      std::fflush(stdout);
    }
  }
  return table;
}

}  // namespace ssm::bench
