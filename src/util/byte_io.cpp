#include "util/byte_io.hpp"

#include <algorithm>

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
  std::unique_lock lock(m_mutex);
  for (;;) {
    std::shared_ptr<Window> w;
    for (const auto& c : m_windows)
      if (c->begin <= offset && offset + length <= c->end) w = c;
    if (w) {
      if (!w->ready) {
        m_cv.wait(lock);
        continue;
      }
      if (w->error) std::rethrow_exception(w->error);
      const auto* p = w->data.data() + (offset - w->begin);
      scratch.assign(p, p + length);
      m_bytes_read += length;
      return scratch;
    }
    // Make room: drop the oldest finished window; wait when all are in flight.
    if (m_windows.size() >= m_max_windows) {
      auto it = std::find_if(m_windows.begin(), m_windows.end(), [](const auto& c) { return c->ready; });
      if (it == m_windows.end()) {
        m_cv.wait(lock);
        continue;
      }
      m_windows.erase(it);
    }
    auto fresh = std::make_shared<Window>();
    fresh->begin = offset;
    fresh->end = offset + std::max<std::uint64_t>(length, std::min<std::uint64_t>(m_window, size() - offset));
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
}

}  // namespace mithril::util
