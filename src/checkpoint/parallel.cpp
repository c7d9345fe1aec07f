#include "checkpoint/parallel.hpp"

#include <tbb/parallel_pipeline.h>
#include <tbb/task_arena.h>

#include <thread>

namespace mithril::checkpoint {

unsigned resolve_threads(unsigned threads) {
  if (threads != 0) return threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? hw : 1;
}

void ordered_pipeline(std::size_t n, unsigned threads, std::size_t in_flight,
                      const std::function<void(std::size_t, std::size_t)>& produce,
                      const std::function<void(std::size_t, std::size_t)>& consume) {
  if (n == 0) return;
  threads = resolve_threads(threads);
  if (threads == 1) {
    for (std::size_t i = 0; i < n; ++i) {
      produce(i, 0);
      consume(i, 0);
    }
    return;
  }
  tbb::task_arena arena(static_cast<int>(threads));
  arena.execute([&] {
    std::size_t next = 0;
    tbb::parallel_pipeline(
        in_flight,
        tbb::make_filter<void, std::size_t>(tbb::filter_mode::serial_in_order,
                                            [&](tbb::flow_control& fc) -> std::size_t {
                                              if (next >= n) {
                                                fc.stop();
                                                return 0;
                                              }
                                              return next++;
                                            }) &
            tbb::make_filter<std::size_t, std::size_t>(tbb::filter_mode::parallel,
                                                       [&](std::size_t i) {
                                                         produce(i, i % in_flight);
                                                         return i;
                                                       }) &
            tbb::make_filter<std::size_t, void>(tbb::filter_mode::serial_in_order,
                                                [&](std::size_t i) { consume(i, i % in_flight); }));
  });
}

}  // namespace mithril::checkpoint
