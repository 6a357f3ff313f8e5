// How the threads of a product share its work items (panels or weight rows): every decode product, and the
// panels of a prefill; also a decode step's attention tasks (one per batch row and head, layers.cc).
//
// Each thread starts on its own contiguous share, so that it reads its part of the weights as one long sequential
// stream, and takes it in chunks from the front. A thread whose share runs out takes chunks from the back of the
// share with the most left. Why not fixed shares: on a shared machine one core often streams a little slower than
// the other, and the fast one then waited at the end of every product (9% of the matmul time, measured at batch 1
// and 8). Why not schedule(dynamic): chunks dealt in turn interleave the two threads' streams across the matrix,
// and batch 1 decode slowed down by 8-36%.
//
// Which thread computes an item never changes its result: every item is computed whole by one thread.
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace kvcache::kernels {

namespace stream_split_detail {

// One share's unclaimed items [front, back), both in one word, so the owner (taking from the front) and a thief
// (taking from the back) claim with one compare-and-swap and never take the same item.
struct alignas(64) Share {  // a cache line each: the owner's claims must not slow the other threads' ones
  std::atomic<uint64_t> range{0};  // front << 32 | back
};

inline uint64_t pack(uint32_t front, uint32_t back) { return static_cast<uint64_t>(front) << 32 | back; }
inline uint32_t front_of(uint64_t r) { return static_cast<uint32_t>(r >> 32); }
inline uint32_t back_of(uint64_t r) { return static_cast<uint32_t>(r); }

// Claims up to `chunk` items from the front (the owner) or the back (a thief); false once the share is empty.
inline bool claim(Share& share, int chunk, bool from_back, int& begin, int& end) {
  uint64_t r = share.range.load(std::memory_order_relaxed);
  while (true) {
    const uint32_t f = front_of(r), b = back_of(r);
    if (f >= b) return false;
    const uint32_t n = std::min<uint32_t>(static_cast<uint32_t>(chunk), b - f);
    const uint64_t next = from_back ? pack(f, b - n) : pack(f + n, b);
    if (share.range.compare_exchange_weak(r, next, std::memory_order_relaxed)) {
      begin = static_cast<int>(from_back ? b - n : f);
      end = static_cast<int>(from_back ? b : f + n);
      return true;
    }
  }
}

}  // namespace stream_split_detail

constexpr long kStreamChunkBytes = 256 * 1024;  // what a thread claims at a time: long sequential reads
constexpr int kMaxStreamShares = 64;  // beyond this many threads, fixed shares (the array below is on the stack)

// body(begin, end) over [0, items) in chunks of up to `chunk` items, on the threads of a new parallel region
// (inside one, on the calling thread alone).
template <class Body>
void parallel_stream(int items, int chunk, Body&& body) {
  using namespace stream_split_detail;
  chunk = std::max(1, chunk);
  // Every share is set before any thread starts: one set by its owner could still read as empty to a thread
  // that finished early, which would then stop instead of helping.
  Share shares[kMaxStreamShares];  // on the stack: the decode loop allocates nothing
  const int expected = omp_get_max_threads();
  auto share_begin = [items](int t, int threads) { return static_cast<int>(static_cast<long>(items) * t / threads); };
  if (expected <= kMaxStreamShares) {
    for (int t = 0; t < expected; ++t) {
      shares[t].range.store(pack(share_begin(t, expected), share_begin(t + 1, expected)), std::memory_order_relaxed);
    }
  }
#pragma omp parallel
  {
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    if (threads != expected || threads > kMaxStreamShares) {  // a smaller team (nested) or too many threads
      const int begin = share_begin(t, threads), end = share_begin(t + 1, threads);
      if (begin < end) body(begin, end);
    } else {
      int b = 0, e = 0;
      while (claim(shares[t], chunk, false, b, e)) body(b, e);
      while (true) {  // then help the share with the most left
        int victim = -1;
        uint32_t most = 0;
        for (int s = 0; s < threads; ++s) {
          const uint64_t r = shares[s].range.load(std::memory_order_relaxed);
          const uint32_t left = back_of(r) > front_of(r) ? back_of(r) - front_of(r) : 0;
          if (left > most) most = left, victim = s;
        }
        if (victim < 0) break;
        if (claim(shares[victim], chunk, true, b, e)) body(b, e);  // else emptied meanwhile: look again
      }
    }
  }
}

}  // namespace kvcache::kernels
