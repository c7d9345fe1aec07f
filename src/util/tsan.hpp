// util/tsan.hpp — tell ThreadSanitizer about oneTBB's hand-offs.
//
// oneTBB passes work between threads inside libtbb.so. Debian's libtbb is not
// built with TSan, so the synchronisation it does there (task spawn, the
// pipeline's token passing, the join at the end of parallel_for/invoke) is
// invisible, and TSan reports the hand-offs themselves as races: e.g. the
// serial input filter of a pipeline running on two threads one after the
// other, or a parent reading what a finished child task wrote.
//
// Each annotation states one ordering that oneTBB documents, at the point
// where it holds: `release(token)` where a thread gives work away, `acquire
// (token)` where another thread takes it up. They are no-ops outside a TSan
// build. Orderings oneTBB does not promise are never declared, so a real race
// between two tasks still reports (docs/reliability.md).
#pragma once

#if defined(__SANITIZE_THREAD__)
#define MITHRIL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MITHRIL_TSAN 1
#endif
#endif

#ifdef MITHRIL_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace mithril::util::tsan {

// Everything this thread did before is visible to whoever acquires `token`.
inline void release([[maybe_unused]] const void* token) {
#ifdef MITHRIL_TSAN
  __tsan_release(const_cast<void*>(token));
#endif
}

// Everything done before any release of `token` that TBB ordered before this
// point is visible from here on.
inline void acquire([[maybe_unused]] const void* token) {
#ifdef MITHRIL_TSAN
  __tsan_acquire(const_cast<void*>(token));
#endif
}

// A task body: takes up the work handed over through `start` and hands its
// results to whoever joins on `done`.
template <class F>
decltype(auto) task(const void* start, const void* done, F&& body) {
  acquire(start);
  struct Done {
    const void* token;
    ~Done() { release(token); }
  } on_exit{done};
  return body();
}

}  // namespace mithril::util::tsan
