// checkpoint/parallel.hpp — the one ordered, bounded pipeline used by
// compression, decompression and verification.
//
//   produce(i)  runs in parallel on up to `threads` workers, i = 0..n-1;
//   consume(i)  runs on one thread at a time, strictly in order of i.
//
// At most `in_flight` items exist at once (memory bound: in_flight slots of
// the caller's per-item state). Slot reuse is safe: item i and i + in_flight
// never coexist because consumption is in order. The first exception thrown
// by either function cancels the rest and is rethrown.
#pragma once

#include <cstddef>
#include <functional>

namespace mithril::checkpoint {

unsigned resolve_threads(unsigned threads);

void ordered_pipeline(std::size_t n, unsigned threads, std::size_t in_flight,
                      const std::function<void(std::size_t item, std::size_t slot)>& produce,
                      const std::function<void(std::size_t item, std::size_t slot)>& consume);

}  // namespace mithril::checkpoint
