// The check of token ids that live on the GPU, shared by ops::embedding and its backward: a kernel
// that meets an id outside [0, V) records it here instead of reading or writing out of bounds, and
// ops::check_embedding_ids (embedding.cu) reads the record where the caller waits anyway and throws
// the CPU op's error for the lowest such position.
#pragma once
#include <cstdint>

namespace ssm::ops::cuda {

// The first bad id since the last check: position << 32 | id bits (the lowest position wins the
// atomicMin; kNoBadId when none), and the vocabulary size of the call that recorded it.
constexpr unsigned long long kNoBadId = ~0ull;
struct BadId {
  unsigned long long position_and_id;
  long long vocab;
};

__device__ __forceinline__ void record_bad_id(BadId* record, int64_t position, int32_t id, int64_t vocab) {
  const unsigned long long key = (static_cast<unsigned long long>(position) << 32) | uint32_t(id);
  if (atomicMin(&record->position_and_id, key) > key) record->vocab = vocab;
}

// The record's device address (in embedding.cu), for kernels of other files.
BadId* bad_id_record();

}  // namespace ssm::ops::cuda
