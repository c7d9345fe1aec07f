#include "util/xxh3.hpp"

#include <xxhash.h>

#include <new>

namespace mithril::util {

std::uint64_t xxh3_64(ByteSpan data) noexcept { return XXH3_64bits(data.data(), data.size()); }

struct Xxh3Stream::State {
  XXH3_state_t* s = nullptr;
  State() : s(XXH3_createState()) {
    if (!s) throw std::bad_alloc();
  }
  ~State() { XXH3_freeState(s); }
  State(const State&) = delete;
  State& operator=(const State&) = delete;
};

Xxh3Stream::Xxh3Stream() : m_state(std::make_unique<State>()) { reset(); }
Xxh3Stream::~Xxh3Stream() = default;
Xxh3Stream::Xxh3Stream(Xxh3Stream&&) noexcept = default;
Xxh3Stream& Xxh3Stream::operator=(Xxh3Stream&&) noexcept = default;

// XXH3_64bits_reset/update return XXH_ERROR only for a null state, which
// the constructor rules out.
void Xxh3Stream::reset() noexcept { (void)XXH3_64bits_reset(m_state->s); }
void Xxh3Stream::update(ByteSpan data) noexcept { (void)XXH3_64bits_update(m_state->s, data.data(), data.size()); }
std::uint64_t Xxh3Stream::digest() const noexcept { return XXH3_64bits_digest(m_state->s); }

}  // namespace mithril::util
