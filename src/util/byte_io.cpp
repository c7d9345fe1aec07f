#include "util/byte_io.hpp"

#include <algorithm>
#include <cstring>

#include "mithril/error.hpp"

namespace mithril::util {

void ByteSource::throw_truncated(std::uint64_t offset, std::size_t length) const {
  throw Error(Errc::corrupt, name() + ": bytes " + std::to_string(offset) + ".." + std::to_string(offset + length) +
                                 " lie past its end (" + std::to_string(size()) + " bytes; truncated?)");
}

MappedSource::MappedSource(const std::filesystem::path& path) : m_file(path), m_name(path.string()) {}

void ByteSink::write_at(std::uint64_t, ByteSpan) {
  throw Error(Errc::internal, name() + ": this output is written in order only");
}

std::string ByteSink::detach() {
  throw Error(Errc::invalid_argument, name() + ": this output cannot be detached");
}

ByteSpan MappedSource::read(std::uint64_t offset, std::size_t length, ByteVector&) const {
  if (offset > m_file.size() || length > m_file.size() - offset) throw_truncated(offset, length);
  m_bytes_read += length;
  return m_file.bytes().subspan(static_cast<std::size_t>(offset), length);
}

ReadAheadSource::ReadAheadSource(const ByteSource& inner, std::size_t window, std::size_t max_windows)
    : m_inner(inner), m_window(window), m_max_windows(std::max<std::size_t>(1, max_windows)) {}

ByteSpan ReadAheadSource::read(std::uint64_t offset, std::size_t length, ByteVector& scratch) const {
  if (offset > size() || length > size() - offset) throw_truncated(offset, length);
  scratch.resize(length);
  const std::uint64_t stop = offset + length;
  std::uint64_t pos = offset;  // what is not copied yet: [pos, stop)
  std::unique_lock lock(m_mutex);
  while (pos < stop) {
    // The window holding `pos`, fetched or in flight: its part of the range.
    std::shared_ptr<Window> w;
    for (const auto& c : m_windows)
      if (c->begin <= pos && pos < c->end) w = c;
    if (w) {
      if (!w->ready) {
        m_cv.wait(lock);
        continue;
      }
      if (w->error) std::rethrow_exception(w->error);
      const auto n = std::min(stop, w->end) - pos;
      std::memcpy(scratch.data() + (pos - offset), w->data.data() + (pos - w->begin), static_cast<std::size_t>(n));
      w->consumed += n;
      pos += n;
      continue;
    }
    // Make room: drop the oldest window read to its end (each byte handed
    // out once, as a decoder reads every chunk once), else the oldest fetched
    // one (a reader still to come for it fetches its part again); wait when
    // all are in flight.
    if (m_windows.size() >= m_max_windows) {
      auto it = std::find_if(m_windows.begin(), m_windows.end(),
                             [](const auto& c) { return c->ready && c->consumed >= c->end - c->begin; });
      if (it == m_windows.end())
        it = std::find_if(m_windows.begin(), m_windows.end(), [](const auto& c) { return c->ready; });
      if (it == m_windows.end()) {
        m_cv.wait(lock);
        continue;
      }
      m_windows.erase(it);
    }
    // A window from `pos`, up to the next one already fetched or in flight:
    // windows never overlap, so no byte is fetched twice while its window is
    // kept (threads that start out of order, say at chunks 1 and 0, used to
    // fetch all that follows twice), and a range across a window's end takes
    // the rest from the next window.
    auto fresh = std::make_shared<Window>();
    fresh->begin = pos;
    fresh->end = pos + std::min<std::uint64_t>(m_window, size() - pos);
    for (const auto& c : m_windows)
      if (c->begin > pos) fresh->end = std::min(fresh->end, c->begin);
    m_windows.push_back(fresh);
    lock.unlock();
    ByteVector data;
    std::exception_ptr error;
    try {
      const auto got = m_inner.read(fresh->begin, static_cast<std::size_t>(fresh->end - fresh->begin), data);
      if (got.data() != data.data()) data.assign(got.begin(), got.end());
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    fresh->data = std::move(data);
    fresh->error = error;
    fresh->ready = true;
    m_cv.notify_all();
    if (error) {
      m_windows.erase(std::find(m_windows.begin(), m_windows.end(), fresh));
      std::rethrow_exception(error);
    }
  }
  m_bytes_read += length;
  return scratch;
}

}  // namespace mithril::util
