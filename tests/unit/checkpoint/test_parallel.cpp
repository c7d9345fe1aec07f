// The pipeline and the parallel loop (checkpoint/parallel.hpp): the promises
// their callers build on — every item once, the serial stage strictly in
// order, a slot held by one item at a time, the first exception rethrown.
// These tests also run under TSan (scripts/sanitize tsan): the plain (not
// atomic) per-slot and per-item state below is what the pipeline's
// hand-offs must order.
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <stdexcept>
#include <vector>

#include "checkpoint/parallel.hpp"

namespace mithril::checkpoint {
namespace {

constexpr std::size_t k_items = 2000;

TEST(Parallel, PipelineRunsEveryStageOnceAndOrdersTheSerialStage) {
  for (const unsigned threads : {1u, 2u, 4u}) {
    const std::size_t in_flight = 3;
    std::vector<std::size_t> worked(k_items, 0), finished(k_items, 0);
    std::vector<std::size_t> order_seen;            // touched by the serial stage only
    std::vector<std::size_t> slot_owner(in_flight);  // plain: the pipeline orders its uses
    std::vector<std::size_t> value(k_items, 0);
    std::atomic<int> slot_clash{0};
    run_pipeline(
        k_items, threads, in_flight,
        [&](std::size_t i, std::size_t s) {
          ASSERT_LT(s, in_flight);
          slot_owner[s] = i;
          value[i] = i * 3 + 1;  // written by work, read by the later stages
          ++worked[i];
        },
        [&](std::size_t i, std::size_t s) {
          if (slot_owner[s] != i) ++slot_clash;
          order_seen.push_back(value[i]);
        },
        [&](std::size_t i, std::size_t s) {
          if (slot_owner[s] != i) ++slot_clash;
          ++finished[i];
        });
    EXPECT_EQ(slot_clash.load(), 0) << threads << " threads";
    ASSERT_EQ(order_seen.size(), k_items);
    for (std::size_t i = 0; i < k_items; ++i) {
      EXPECT_EQ(worked[i], 1u);
      EXPECT_EQ(finished[i], 1u);
      EXPECT_EQ(order_seen[i], i * 3 + 1) << "serial stage out of order at " << i;
    }
  }
}

TEST(Parallel, LoopVisitsEveryIndexOnceWithExclusiveSlots) {
  for (const unsigned threads : {1u, 2u, 3u}) {
    const std::size_t slots = loop_slots(threads);
    std::vector<int> visits(k_items, 0);
    std::vector<std::size_t> per_slot(slots, 0);  // plain per-slot state, like the readers' decoders
    parallel_for_index(k_items, threads, [&](std::size_t i, std::size_t s) {
      ASSERT_LT(s, slots);
      ++per_slot[s];
      ++visits[i];
    });
    std::size_t total = 0;
    for (const auto n : per_slot) total += n;
    EXPECT_EQ(total, k_items) << threads << " threads";
    for (std::size_t i = 0; i < k_items; ++i) EXPECT_EQ(visits[i], 1) << "index " << i;
  }
}

TEST(Parallel, FirstExceptionIsRethrownAndNothingRunsAfterTheCaller) {
  for (const unsigned threads : {1u, 2u}) {
    std::atomic<std::size_t> ran{0};
    EXPECT_THROW(parallel_for_index(k_items, threads,
                                    [&](std::size_t i, std::size_t) {
                                      ++ran;
                                      if (i == 17) throw std::runtime_error("item 17");
                                    }),
                 std::runtime_error);
    const std::size_t after = ran.load();
    EXPECT_GE(after, 1u);  // items before 17 may be cancelled before they start
    EXPECT_LE(after, k_items);
    EXPECT_EQ(ran.load(), after) << "work went on after the call returned";
  }
  parallel_for_index(0, 2, [](std::size_t, std::size_t) { FAIL() << "no items, no calls"; });
}

}  // namespace
}  // namespace mithril::checkpoint
