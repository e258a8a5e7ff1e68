// Token-id files shared by the commands: .npy int32/int64, returned as int32.
#include <limits>

#include "core/npy.h"

namespace ssm::cli {

Tensor read_token_ids(const std::string& path) {
  const Tensor raw = read_npy(path);
  SSM_CHECK(raw.dtype() == DType::I32 || raw.dtype() == DType::I64, "'{}': token ids must be int32 or int64, got {}",
            path, dtype_name(raw.dtype()));
  if (raw.dtype() == DType::I64) {
    const int64_t* values = raw.data<int64_t>();
    for (int64_t i = 0; i < raw.numel(); ++i) {
      SSM_CHECK(values[i] >= 0 && values[i] <= std::numeric_limits<int32_t>::max(),
                "'{}': token id {} at position {} is out of range", path, values[i], i);
    }
  }
  return raw.to(DType::I32);
}

}  // namespace ssm::cli
