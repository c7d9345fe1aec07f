#include "checkpoint/parallel.hpp"

#include <tbb/concurrent_queue.h>
#include <tbb/parallel_pipeline.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <thread>
#include <utility>

#include "mithril/error.hpp"

namespace mithril::checkpoint {

unsigned resolve_threads(unsigned threads) {
  if (threads != 0) return threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? hw : 1;
}

void run_pipeline(std::size_t n, unsigned threads, std::size_t in_flight, const PipelineStage& work,
                  const PipelineStage& order, const PipelineStage& finish) {
  if (n == 0) return;
  // More workers than items would only spin (TBB's idle workers yield in a
  // loop before they sleep): a one-chunk file runs on the calling thread.
  threads = static_cast<unsigned>(std::min<std::size_t>(resolve_threads(threads), n));
  if (threads == 1) {
    for (std::size_t i = 0; i < n; ++i) {
      work(i, 0);
      if (order) order(i, 0);
      if (finish) finish(i, 0);
    }
    return;
  }
  // Items leave the parallel stages out of order, so slots come from a free
  // list rather than i % in_flight. TBB never has more than in_flight items
  // alive, so the list is never empty when an item starts.
  tbb::concurrent_queue<std::size_t> free_slots;
  for (std::size_t s = 0; s < in_flight; ++s) free_slots.push(s);
  using Item = std::pair<std::size_t, std::size_t>;  // (item, slot)
  tbb::task_arena arena(static_cast<int>(threads));
  arena.execute([&] {
    std::size_t next = 0;
    const auto input = tbb::make_filter<void, Item>(tbb::filter_mode::serial_in_order,
                                                    [&](tbb::flow_control& fc) -> Item {
                                                      if (next >= n) {
                                                        fc.stop();
                                                        return {};
                                                      }
                                                      std::size_t s = 0;
                                                      if (!free_slots.try_pop(s))
                                                        throw Error(Errc::internal, "pipeline: no free slot");
                                                      return {next++, s};
                                                    });
    const auto working = tbb::make_filter<Item, Item>(tbb::filter_mode::parallel, [&](Item it) {
      work(it.first, it.second);
      return it;
    });
    const auto done = tbb::make_filter<Item, void>(tbb::filter_mode::parallel, [&](Item it) {
      if (finish) finish(it.first, it.second);
      free_slots.push(it.second);
    });
    if (!order) {
      // Nothing serial: items never wait for earlier ones.
      tbb::parallel_pipeline(in_flight, input & working & done);
      return;
    }
    const auto ordering = tbb::make_filter<Item, Item>(tbb::filter_mode::serial_in_order, [&](Item it) {
      order(it.first, it.second);
      return it;
    });
    tbb::parallel_pipeline(in_flight, input & working & ordering & done);
  });
}

}  // namespace mithril::checkpoint
