#include "infer/prefill_graphs.h"

namespace ssm {

bool PrefillGraphs::recordable(const Tensor& ids, const ModelState& state) const {
  // Shapes the forward would refuse go to it, for its error.
  return model_.device() != Device::CPU && !recordings_.refused() && ids.dim() == 2 && ids.dtype() == DType::I32 &&
         ids.size(0) > 0 && ids.size(0) <= kMaxRows && ids.size(1) > 0 && ids.size(1) <= kMaxTokens &&
         state.batch == ids.size(0) && state.device == model_.device() && !state.mixers.empty() &&
         state.resizable() && model_.replayable_forward();
}

void PrefillGraphs::stage(int64_t rows) {
  if (staging_.mixers.empty()) staging_ = model_.new_state(rows);
  else staging_.resize(rows);
  if (staging_bytes_ != staging_.bytes()) {  // grown: the recordings' rows are gone
    recordings_.clear();
    staging_bytes_ = staging_.bytes();
  }
}

Tensor PrefillGraphs::forward(const Tensor& ids, ModelState& state, Workspace& ws) {
  if (!recordable(ids, state)) return model_.forward(ids, &state, false, ws);
  const int64_t rows = ids.size(0), tokens = ids.size(1);
  if (!ids_.defined()) ids_ = Tensor::empty({kMaxRows * kMaxTokens}, DType::I32, model_.device());
  Tensor here = ids_.slice(0, 0, rows * tokens).view({rows, tokens});
  model_.copy_ids(ids, here);  // checked against the vocabulary on the host
  const GraphRecordings::Key key{rows, tokens};
  // The staging state is made (or grown) only for a recording: a shape seen once costs nothing more.
  if (recordings_.recorded(key, ws) || recordings_.records_next(key)) stage(rows);
  if (recordings_.recorded(key, ws)) {
    state.copy_sequences(0, staging_, 0, rows);
    Tensor logits = recordings_.replay(key, ws);
    staging_.copy_sequences(0, state, 0, rows);
    return logits;
  }
  return recordings_.run(
      key, ws, [&] { return model_.forward(here, &state, false, ws); },
      [&] { return model_.forward(here, &staging_, false, ws); });
}

}  // namespace ssm
