// v4 of the chunked SSD forward (dev/cuda/ssd.cu times it beside v3; the engine still runs v3 from
// ssd_kernels.cuh). The same two passes over segments of chunks, with the work that does not depend
// on the state taken out of their per-chunk chains:
//   0. chunk_prep_kernel, per (batch, chunk), fully parallel: every head's dt scan (ChunkScan, as
//      scan_chunk computes it) and every group's raw C Bᵀ on and below the diagonal (64 x 64 in T),
//      into scratch. C Bᵀ is computed once per group instead of once per head.
//   1. piece_state_kernel: v3's pass 1 with a four-stage copy pipeline (chunk c + 3's x, B and scan
//      copied while chunk c is computed) and the scan read, not computed.
//   2. chunk_scan_kernel: v3's pass 2 with the scan copied in with the chunk's tiles and C Bᵀ read
//      from scratch into registers (the next chunk's loaded while this one's state is updated), so
//      each chunk's chain has no C Bᵀ product and no dt scan: store the state, mask C Bᵀ into Ms,
//      barrier, C Sᵀ + Ms X, update the state.
// Rounding: for BF16 the raw C Bᵀ is rounded to BF16 in scratch before the mask (v3 rounds only the
// masked product); F32 keeps F32 throughout.
#pragma once
#include <cstddef>

#include "ssd_kernels.cuh"

namespace ssm::ops::cuda::ssd_kernels::v4 {

// Pass 1 needs only these of a chunk's scan: ChunkScan's last members, copied as they lie there.
struct PieceScan {
  float weight[kChunk];
  float alast, decay;
  float unused[2];
};
static_assert(sizeof(ChunkScan) - offsetof(ChunkScan, weight) == sizeof(PieceScan) &&
                  offsetof(ChunkScan, alast) - offsetof(ChunkScan, weight) == offsetof(PieceScan, alast) &&
                  sizeof(PieceScan) % 16 == 0 && sizeof(ChunkScan) % 16 == 0,
              "PieceScan is the tail of ChunkScan, in 16-byte pieces");

constexpr int kPieceStages = 4;

// Where the launch's scratch goes: v3's slots and log-decays, then the scans [B*H][chunks], then the
// raw C Bᵀ [B*G][chunks][kChunk][kChunk] in T; each part 16-byte aligned.
template <class T>
struct Scratch {
  float* slots;
  float* log_decays;
  ChunkScan* scans;
  T* cb;
};
inline size_t round4(size_t floats) { return (floats + 3) / 4 * 4; }
template <class T>
size_t scratch_floats(const Args<T>& a, const Plan& plan) {
  const int64_t heads = int64_t(a.batch) * a.heads;
  return round4(ssd_kernels::scratch_floats(plan, heads, a.head_dim, a.state_dim)) +
         size_t(heads) * plan.chunks * (sizeof(ChunkScan) / 4) +
         round4(size_t(a.batch) * a.groups * plan.chunks * kChunk * kChunk * sizeof(T) / 4);
}
template <class T>
Scratch<T> scratch_parts(float* scratch, const Args<T>& a, const Plan& plan) {
  const int64_t heads = int64_t(a.batch) * a.heads;
  float* const scans = scratch + round4(ssd_kernels::scratch_floats(plan, heads, a.head_dim, a.state_dim));
  float* const cb = scans + size_t(heads) * plan.chunks * (sizeof(ChunkScan) / 4);
  return {scratch, scratch + size_t(heads) * (1 + plan.pieces()) * a.head_dim * a.state_dim,
          reinterpret_cast<ChunkScan*>(scans), reinterpret_cast<T*>(cb)};
}

// Queues the copy of `bytes` (a multiple of 16) from src to shared dst, 16 bytes a thread.
__device__ __forceinline__ void copy_bytes_async(void* dst, const void* src, int bytes) {
  for (int i = threadIdx.x; i < bytes / 16; i += kThreads)
    ptx::cp_async_16(static_cast<char*>(dst) + 16 * i, static_cast<const char*>(src) + 16 * i, 16);
}

// One warp's raw C Bᵀ tiles (cb_tiles' tiling) as pairs of T, in registers between the global load and
// the mask.
template <class T>
struct CbPairs;
template <>
struct CbPairs<bf16> {
  using Pair = __nv_bfloat162;
  Pair v[4][2];
  __device__ __forceinline__ float first(int nt, int half) const { return __low2float(v[nt][half]); }
  __device__ __forceinline__ float second(int nt, int half) const { return __high2float(v[nt][half]); }
};
template <>
struct CbPairs<float> {
  using Pair = float2;
  Pair v[4][2];
  __device__ __forceinline__ float first(int nt, int half) const { return v[nt][half].x; }
  __device__ __forceinline__ float second(int nt, int half) const { return v[nt][half].y; }
};

// Calls f(nt, half, l, s) for each pair (l, s), (l, s + 1) of the warp's C Bᵀ tiles (cb_tiles' tiling).
template <class F>
__device__ __forceinline__ void for_cb_pairs(F&& f) {
  const int lane = threadIdx.x & 31, m0 = cb_row0(), s0 = cb_col0();
  if (s0 > m0 + 15) return;
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    if (!cb_tile_needed(nt)) continue;
#pragma unroll
    for (int half = 0; half < 2; ++half) f(nt, half, m0 + (lane >> 2) + 8 * half, s0 + 8 * nt + 2 * (lane & 3));
  }
}

// The raw C Bᵀ of chunk `c` of (b, g): [kChunk][kChunk] in T.
template <class T>
__device__ __forceinline__ const T* cb_of(const Args<T>& a, const T* cb, int chunks, int b, int g, int c) {
  return cb + ((int64_t(b) * a.groups + g) * chunks + c) * (kChunk * kChunk);
}

template <class T>
__device__ __forceinline__ void load_cb(CbPairs<T>& f, const T* src) {
  for_cb_pairs([&](int nt, int half, int l, int s) {
    f.v[nt][half] = *reinterpret_cast<const typename CbPairs<T>::Pair*>(src + l * kChunk + s);
  });
}

// Pass 0. Block (b, chunk c): the scans of every head into scans[(b H + h) chunks + c], then for each
// group the raw C Bᵀ (tiles wholly above the diagonal not written) into cb. The first group's B and C
// are copied while the scans run; each warp loads the raw dt of up to kPrepHeads heads before scanning.
constexpr int kPrepHeads = 4;

template <class T, int kN>
__global__ void __launch_bounds__(kThreads) chunk_prep_kernel(Args<T> a, int chunks, ChunkScan* __restrict__ scans,
                                                              T* __restrict__ cb) {
  using L = Tiles<T, kN>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* const Bs = reinterpret_cast<T*>(smem);
  T* const Cs = Bs + L::kBC;
  const int c = int(blockIdx.x % unsigned(chunks)), b = int(blockIdx.x / unsigned(chunks));
  const int warp = threadIdx.x >> 5, rows = chunk_rows(a.length, c);
  const int64_t row0 = int64_t(b) * a.length + int64_t(c) * kChunk;
  auto copy = [&](int g) {
    copy_chunk_async(Bs, typename L::BC{}, a.B + int64_t(g) * a.state_dim, a.ldB, row0, rows, a.state_dim);
    copy_chunk_async(Cs, typename L::BC{}, a.C + int64_t(g) * a.state_dim, a.ldC, row0, rows, a.state_dim);
    ptx::cp_async_commit();
  };
  zero_shared(smem, 2 * size_t(L::kBC) * sizeof(T));
  __syncthreads();  // the zeros are in before the copies land
  copy(0);
  for (int h0 = warp; h0 < a.heads; h0 += kWarps * kPrepHeads) {
    float raw[kPrepHeads][2];
#pragma unroll
    for (int i = 0; i < kPrepHeads; ++i)
      if (h0 + kWarps * i < a.heads) load_raw_dt(a, BlockCoords{b, h0 + kWarps * i, 0, 0, 0}, c, raw[i]);
#pragma unroll
    for (int i = 0; i < kPrepHeads; ++i) {
      const int h = h0 + kWarps * i;
      if (h < a.heads) scan_chunk(scans[(int64_t(b) * a.heads + h) * chunks + c], raw[i], rows, a, h);
    }
  }
  for (int g = 0; g < a.groups; ++g) {
    ptx::cp_async_wait_all();
    __syncthreads();  // group g's tiles are in
    float acc[4][4] = {};
    cb_tiles<T, kN>(acc, Cs, Bs);
    T* const dst = cb + ((int64_t(b) * a.groups + g) * chunks + c) * (kChunk * kChunk);
    for_cb_pairs([&](int nt, int half, int l, int s) {
      store_pair(dst + l * kChunk + s, acc[nt][2 * half], acc[nt][2 * half + 1]);
    });
    if (g + 1 < a.groups) {
      __syncthreads();  // every warp is done with group g's tiles
      copy(g + 1);
    }
  }
}

template <class T, int kN>
constexpr size_t prep_smem() {
  return 2 * size_t(Tiles<T, kN>::kBC) * sizeof(T);
}
template <class T, int kN>
constexpr size_t piece_state_smem() {
  using L = Tiles<T, kN>;
  return kPieceStages * (size_t(L::kX + L::kBC) * sizeof(T) + sizeof(PieceScan));
}
static_assert(2 * (piece_state_smem<bf16, 128>() + 1024) <= 228 * 1024, "two BF16 pass-1 blocks must fit one");

// Pass 1: v3's piece_state_kernel (same outputs) with chunks copied kPieceStages - 1 ahead and the scans
// read. Two BF16 blocks a multiprocessor (v3: three at 80 registers), with room for four stages: at H 32
// the plan has 7 x 32 pass-1 blocks, under two per multiprocessor, so v3's third slot stood empty.
template <class T>
constexpr int kPieceBlocksPerSm = sizeof(T) == 2 ? 2 : 1;

template <class T, int kN>
__global__ void __launch_bounds__(kThreads, kPieceBlocksPerSm<T>) piece_state_kernel(Args<T> a, Plan plan, const float* __restrict__ state0,
                                                               float* __restrict__ slots,
                                                               float* __restrict__ log_decays,
                                                               const ChunkScan* __restrict__ scans) {
  using L = Tiles<T, kN>;
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kStage = L::kX + L::kBC;  // a stage: x, then B
  T* const tiles = reinterpret_cast<T*>(smem);
  PieceScan* const scan = reinterpret_cast<PieceScan*>(tiles + kPieceStages * kStage);

  const BlockCoords bc = block_coords(a);
  const int P = a.head_dim, N = a.state_dim;
  const int64_t PN = int64_t(P) * N;
  float* const head_slots = slots + bc.bh * (1 + plan.pieces()) * PN;
  if (bc.part == 0 && state0)
    for (int64_t i = threadIdx.x; i < PN; i += kThreads) head_slots[i] = state0[bc.bh * PN + i];

  const int segment = bc.part / plan.pieces_per_segment, piece = bc.part % plan.pieces_per_segment;
  const int c_begin = segment * plan.chunks_per_segment + piece * plan.chunks_per_piece;
  const int c_end = min(c_begin + plan.chunks_per_piece, (segment + 1) * plan.chunks_per_segment);
  // Queues chunk c's x, B and scan into stage (c - c_begin) % kPieceStages (no commit).
  auto copy = [&](int c) {
    const int stage = (c - c_begin) % kPieceStages;
    T* const Xs = tiles + stage * kStage;
    const int64_t row0 = int64_t(bc.b) * a.length + int64_t(c) * kChunk;
    const int rows = chunk_rows(a.length, c);
    copy_chunk_async(Xs, typename L::X{}, a.x + int64_t(bc.h) * P, a.ldx, row0, rows, P);
    copy_chunk_async(Xs + L::kX, typename L::BC{}, a.B + int64_t(bc.g) * N, a.ldB, row0, rows, N);
    copy_bytes_async(&scan[stage], &scans[bc.bh * plan.chunks + c].weight[0], sizeof(PieceScan));
  };
  zero_shared(tiles, kPieceStages * size_t(kStage) * sizeof(T));
  __syncthreads();
  // One commit group per chunk, empty past the end, so that group i always holds chunk c_begin + i.
#pragma unroll
  for (int i = 0; i < kPieceStages - 1; ++i) {
    if (c_begin + i < c_end) copy(c_begin + i);
    ptx::cp_async_commit();
  }

  StateTiles<kN> S = {};
  float log_decay = 0.0f;
  for (int c = c_begin; c < c_end; ++c) {
    const int stage = (c - c_begin) % kPieceStages;
    T* const Xs = tiles + stage * kStage;
    ptx::cp_async_wait_groups<kPieceStages - 2>();  // chunk c's group; the kPieceStages - 2 after it may fly
    __syncthreads();  // chunk c's tiles are in; every warp is done with chunk c - 1 (the stage refilled next)
    if (c + kPieceStages - 1 < c_end) copy(c + kPieceStages - 1);
    ptx::cp_async_commit();
    update_state<T, kN>(S, Xs, Xs + L::kX, scan[stage], c > c_begin);
    log_decay += scan[stage].alast;
  }
  store_state<kN>(S, head_slots + (bc.part + 1) * PN, P, N);
  if (threadIdx.x == 0) log_decays[bc.bh * plan.pieces() + bc.part] = log_decay;
}

// Pass 2: v3's chunk_scan_kernel (same arguments and outputs, the same shared memory) with the scans
// copied and C Bᵀ read from pass 0's scratch.
template <class T, int kN>
__global__ void __launch_bounds__(kThreads, kScanBlocksPerSm<T>)
    chunk_scan_kernel(Args<T> a, Plan plan, float* __restrict__ state, const float* __restrict__ slots,
                      const float* __restrict__ log_decays, const ChunkScan* __restrict__ scans,
                      const T* __restrict__ cb) {
  using L = Tiles<T, kN>;
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kStage = L::kX + 2 * L::kBC;  // a stage: x, B, then C
  T* const tiles = reinterpret_cast<T*>(smem);
  T* const Ms = tiles + 2 * kStage;
  T* const Ss = Ms + L::kM;
  ChunkScan* const scan = reinterpret_cast<ChunkScan*>(Ss + L::kS);

  const BlockCoords bc = block_coords(a);
  const int P = a.head_dim, N = a.state_dim;
  const int64_t PN = int64_t(P) * N;
  const bool state_io = state != nullptr, last_segment = bc.part == plan.segments - 1;
  const int c_begin = bc.part * plan.chunks_per_segment;
  const int c_end = min(plan.chunks, c_begin + plan.chunks_per_segment);
  // Queues chunk c's x, B, C and scan into stage (c - c_begin) & 1, and commits.
  auto copy = [&](int c) {
    const int stage = (c - c_begin) & 1;
    T* const Xs = tiles + stage * kStage;
    const int64_t row0 = int64_t(bc.b) * a.length + int64_t(c) * kChunk;
    const int rows = chunk_rows(a.length, c);
    copy_chunk_async(Xs, typename L::X{}, a.x + int64_t(bc.h) * P, a.ldx, row0, rows, P);
    copy_chunk_async(Xs + L::kX, typename L::BC{}, a.B + int64_t(bc.g) * N, a.ldB, row0, rows, N);
    copy_chunk_async(Xs + L::kX + L::kBC, typename L::BC{}, a.C + int64_t(bc.g) * N, a.ldC, row0, rows, N);
    copy_bytes_async(&scan[stage], &scans[bc.bh * plan.chunks + c], sizeof(ChunkScan));
    ptx::cp_async_commit();
  };

  zero_shared(tiles, 2 * size_t(kStage) * sizeof(T));
  __syncthreads();
  copy(c_begin);
  CbPairs<T> cb_next;
  load_cb(cb_next, cb_of(a, cb, plan.chunks, bc.b, bc.g, c_begin));

  // The state entering the segment: the initial state carried through the pieces before.
  StateTiles<kN> S = {};
  const float* const head_slots = plan.segments > 1 ? slots + bc.bh * (1 + plan.pieces()) * PN : nullptr;
  if (state_io) add_state<kN>(S, plan.segments == 1 ? state + bc.bh * PN : head_slots, P, N, 0.0f);
  for (int piece = 0; piece < bc.part * plan.pieces_per_segment; ++piece)
    add_state<kN>(S, head_slots + (piece + 1) * PN, P, N, expf(log_decays[bc.bh * plan.pieces() + piece]));

  const float D = a.D ? a.D[bc.h] : 0.0f;
  for (int c = c_begin; c < c_end; ++c) {
    const int stage = (c - c_begin) & 1;
    const ChunkScan& sc = scan[stage];
    const bool has_prev = c > 0 || state_io;
    T* const Xs = tiles + stage * kStage;
    T* const Bs = Xs + L::kX;
    T* const Cs = Bs + L::kBC;
    ptx::cp_async_wait_all();
    __syncthreads();  // chunk c's tiles and scan are in; every warp is done with chunk c - 1
    if (c + 1 < c_end) copy(c + 1);
    if (has_prev)
      for_state_pairs<kN>([&](int mt, int nt, int half, int p, int n) {
        store_pair(Ss + L::S::at(p, n), S[mt][nt][2 * half], S[mt][nt][2 * half + 1]);
      });
    {
      float acc[4][4] = {};
      for_cb_pairs([&](int nt, int half, int, int) {
        acc[nt][2 * half] = cb_next.first(nt, half);
        acc[nt][2 * half + 1] = cb_next.second(nt, half);
      });
      store_masked_cb<T, kN>(Ms, acc, sc, D);
    }
    __syncthreads();  // Ms and Ss complete
    T* const y = a.y + (int64_t(bc.b) * a.length + int64_t(c) * kChunk) * a.ldy + int64_t(bc.h) * P;
    chunk_output<T, kN>(y, a.ldy, chunk_rows(a.length, c), P, Cs, Ss, Ms, Xs, sc, has_prev);
    if (c + 1 < c_end) load_cb(cb_next, cb_of(a, cb, plan.chunks, bc.b, bc.g, c + 1));  // in flight meanwhile
    if (c + 1 < c_end || (last_segment && state_io)) update_state<T, kN>(S, Xs, Bs, sc, has_prev);
  }
  if (last_segment && state_io) store_state<kN>(S, state + bc.bh * PN, P, N);
}

}  // namespace ssm::ops::cuda::ssd_kernels::v4
