// checkpoint/parallel.hpp — the one bounded pipeline used by compression,
// decompression and verification, and a parallel loop for the readers.
//
//   work(i, s)    runs in parallel on up to `threads` workers, i = 0..n-1,
//                 started in order of i;
//   order(i, s)   (optional) runs on one thread at a time, strictly in order
//                 of i — keep it cheap (e.g. assign an output offset): it is
//                 the only serial stage;
//   finish(i, s)  (optional) runs in parallel after order(i, s).
//
// `s` is the item's slot in [0, in_flight): held by item i from work() until
// finish() returns, so per-item state can live in `in_flight` caller slots.
// At most `in_flight` items exist at once (memory bound). The first exception
// thrown by any stage cancels the rest and is rethrown.
#pragma once

#include <cstddef>
#include <functional>

namespace mithril::checkpoint {

unsigned resolve_threads(unsigned threads);

// Copies of stored (uncoded) tensor data are split into pieces of this size
// so that one large tensor still uses every worker.
inline constexpr std::size_t k_copy_piece = std::size_t{16} << 20;

using PipelineStage = std::function<void(std::size_t item, std::size_t slot)>;


void run_pipeline(std::size_t n, unsigned threads, std::size_t in_flight, const PipelineStage& work,
                  const PipelineStage& order = {}, const PipelineStage& finish = {});

// fn(i, s) for i = 0..n-1 in any order on up to `threads` workers (0: all
// cores); serially when threads is 1. s < loop_slots(threads) is held by one
// call at a time, so per-worker state (a decoder) can live in a vector of
// loop_slots(threads). The first exception is rethrown.
std::size_t loop_slots(unsigned threads);
void parallel_for_index(std::size_t n, unsigned threads, const PipelineStage& fn);

}  // namespace mithril::checkpoint
