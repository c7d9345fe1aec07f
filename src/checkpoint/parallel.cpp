#include "checkpoint/parallel.hpp"

#include <tbb/parallel_pipeline.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "mithril/error.hpp"
#include "util/tsan.hpp"

namespace mithril::checkpoint {

namespace {

// Releases TSan tokens when a filter body ends, normally or by an exception.
struct ReleaseOnExit {
  const void* a;
  const void* b = nullptr;
  const void* c = nullptr;
  ~ReleaseOnExit() {
    for (const void* t : {a, b, c})
      if (t) util::tsan::release(t);
  }
};

}  // namespace

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
  // (A plain vector under a mutex, not a oneTBB queue: its memory comes from
  // malloc, whose reuse across threads TSan sees.)
  std::mutex free_mutex;
  std::vector<std::size_t> free_slots(in_flight);
  for (std::size_t s = 0; s < in_flight; ++s) free_slots[s] = in_flight - 1 - s;
  using Item = std::pair<std::size_t, std::size_t>;  // (item, slot)
  // TSan tokens (util/tsan.hpp) for what oneTBB orders: the caller's state
  // before the pipeline, each serial filter's one-call-at-a-time order, an
  // item's way through the filters (and its slot's reuse), and the join when
  // parallel_pipeline returns.
  const char start = 0, input_order = 0, output_order = 0, joined = 0;
  const std::vector<char> slot(in_flight);
  util::tsan::release(&start);
  tbb::task_arena arena(static_cast<int>(threads));
  const auto run = [&] {  // execute() may run it on a worker
    util::tsan::acquire(&start);
    std::size_t next = 0;
    const auto input = tbb::make_filter<void, Item>(tbb::filter_mode::serial_in_order,
                                                    [&](tbb::flow_control& fc) -> Item {
                                                      util::tsan::acquire(&start);
                                                      util::tsan::acquire(&input_order);
                                                      const ReleaseOnExit exit{&input_order, &joined};
                                                      if (next >= n) {
                                                        fc.stop();
                                                        return {};
                                                      }
                                                      std::size_t s = 0;
                                                      {
                                                        const std::lock_guard lock(free_mutex);
                                                        if (free_slots.empty())
                                                          throw Error(Errc::internal, "pipeline: no free slot");
                                                        s = free_slots.back();
                                                        free_slots.pop_back();
                                                      }
                                                      util::tsan::acquire(&slot[s]);
                                                      util::tsan::release(&slot[s]);
                                                      return {next++, s};
                                                    });
    const auto working = tbb::make_filter<Item, Item>(tbb::filter_mode::parallel, [&](Item it) {
      util::tsan::acquire(&slot[it.second]);
      const ReleaseOnExit exit{&slot[it.second], &joined};
      work(it.first, it.second);
      return it;
    });
    const auto done = tbb::make_filter<Item, void>(tbb::filter_mode::parallel, [&](Item it) {
      util::tsan::acquire(&slot[it.second]);
      const ReleaseOnExit exit{&joined};  // after the push below
      {
        const ReleaseOnExit handed_back{&slot[it.second]};
        if (finish) finish(it.first, it.second);
      }
      const std::lock_guard lock(free_mutex);
      free_slots.push_back(it.second);
    });
    util::tsan::release(&start);
    if (!order) {
      // Nothing serial: items never wait for earlier ones.
      tbb::parallel_pipeline(in_flight, input & working & done);
      return;
    }
    const auto ordering = tbb::make_filter<Item, Item>(tbb::filter_mode::serial_in_order, [&](Item it) {
      util::tsan::acquire(&output_order);
      util::tsan::acquire(&slot[it.second]);
      const ReleaseOnExit exit{&slot[it.second], &output_order, &joined};
      order(it.first, it.second);
      return it;
    });
    tbb::parallel_pipeline(in_flight, input & working & ordering & done);
  };
  try {
    arena.execute(run);
  } catch (...) {
    util::tsan::acquire(&joined);
    throw;
  }
  util::tsan::acquire(&joined);
}

std::size_t loop_slots(unsigned threads) { return 2 * std::size_t{resolve_threads(threads)}; }

void parallel_for_index(std::size_t n, unsigned threads, const PipelineStage& fn) {
  // The pipeline with no serial stage: one mechanism for every parallel loop,
  // its hand-offs declared to TSan once (above).
  run_pipeline(n, threads, loop_slots(threads), fn);
}

}  // namespace mithril::checkpoint
