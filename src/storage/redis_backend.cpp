#include "storage/redis_backend.hpp"

#include <hiredis/hiredis.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <random>

#include <fmt/format.h>

#include "mithril/error.hpp"
#include "storage/upload_token.hpp"
#include "util/interrupt.hpp"

namespace mithril::storage {
namespace {

constexpr std::string_view k_upload_marker = ".mithril-upload-";
// Temporaries (and the marks of completed detached uploads) expire after a
// day: time enough for a coordinator to complete a detached upload, and what
// a killed or failed writer left goes by itself.
constexpr int k_upload_ttl_s = 86400;
constexpr std::string_view k_completed_suffix = ".completed";

// Cleanup calls (aborting an upload) must run even after an interrupt.
enum class Cleanup { no, yes };

struct ContextDeleter {
  void operator()(redisContext* c) const noexcept { redisFree(c); }
};
struct ReplyDeleter {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// One command's arguments, binary-safe.
class Args {
 public:
  Args& add(std::string_view s) {
    m_items.emplace_back(s);
    return *this;
  }
  Args& add(util::ByteSpan b) { return add(util::as_chars(b)); }
  Args& add(std::uint64_t n) { return add(std::string_view(std::to_string(n))); }
  int argc() const { return static_cast<int>(m_items.size()); }
  void fill(std::vector<const char*>& argv, std::vector<std::size_t>& lens) const {
    argv.clear();
    lens.clear();
    for (const auto& s : m_items) {
      argv.push_back(s.data());
      lens.push_back(s.size());
    }
  }
  const std::string& name() const { return m_items.front(); }

 private:
  std::vector<std::string> m_items;
};

class RedisBackend;

class RedisUpload final : public Upload {
 public:
  RedisUpload(RedisBackend& backend, std::string key);
  ~RedisUpload() override { abort(); }
  void write(util::ByteSpan data) override;
  void complete() override;
  std::string detach() override;
  void abort() noexcept override;
  std::uint64_t size() const noexcept override { return m_size; }

 private:
  void flush();

  RedisBackend& m_backend;
  std::string m_key, m_temp;
  util::ByteVector m_buffer;
  std::uint64_t m_size = 0, m_flushed = 0;
  bool m_started = false, m_done = false, m_failed = false;
};

class RedisBackend final : public Backend {
 public:
  RedisBackend(Url url, Options options) : m_url(std::move(url)), m_options(std::move(options)) {
    if (!m_url.port) m_url.port = 6379;
    m_endpoint = fmt::format("redis://{}:{}/{}", m_url.host, m_url.port, m_url.db);
  }

  const std::string& endpoint() const noexcept override { return m_endpoint; }
  const Options& options() const noexcept { return m_options; }

  std::optional<util::ByteVector> get(std::string_view key) override {
    return retry("GET " + std::string(key), [&]() -> std::optional<util::ByteVector> {
      auto r = command(Args().add("GET").add(key));
      if (r->type == REDIS_REPLY_NIL) return std::nullopt;
      return bytes_of(*r);
    });
  }

  std::optional<util::ByteVector> get_at_most(std::string_view key, std::uint64_t max_bytes) override {
    return retry("GET " + std::string(key), [&]() -> std::optional<util::ByteVector> {
      // STRLEN first: a value larger than expected is never transferred.
      auto n = command(Args().add("STRLEN").add(key));
      if (n->type == REDIS_REPLY_INTEGER && static_cast<std::uint64_t>(n->integer) > max_bytes)
        throw Error(Errc::corrupt, m_endpoint + ": " + std::string(key) + ": " + std::to_string(n->integer) +
                                       " bytes, larger than the " + std::to_string(max_bytes) + " expected");
      auto r = command(Args().add("GET").add(key));
      if (r->type == REDIS_REPLY_NIL) return std::nullopt;
      auto out = bytes_of(*r);
      if (out.size() > max_bytes)  // replaced meanwhile
        throw Error(Errc::corrupt, m_endpoint + ": " + std::string(key) + ": larger than the " +
                                       std::to_string(max_bytes) + " bytes expected");
      return out;
    });
  }

  std::optional<util::ByteVector> get_range(std::string_view key, std::uint64_t offset, std::uint64_t length) override {
    return retry("GETRANGE " + std::string(key), [&]() -> std::optional<util::ByteVector> {
      if (length == 0) {
        if (!exists_now(key)) return std::nullopt;
        return util::ByteVector{};
      }
      auto r = command(Args().add("GETRANGE").add(key).add(offset).add(offset + length - 1));
      auto out = bytes_of(*r);
      // GETRANGE answers "" both past the end and for a missing key.
      if (out.empty() && !exists_now(key)) return std::nullopt;
      return out;
    });
  }

  std::optional<ObjectInfo> stat(std::string_view key) override {
    return retry("EXISTS " + std::string(key), [&]() -> std::optional<ObjectInfo> {
      if (!exists_now(key)) return std::nullopt;
      auto r = command(Args().add("STRLEN").add(key));
      return ObjectInfo{static_cast<std::uint64_t>(r->integer)};
    });
  }

  void put(std::string_view key, util::ByteSpan data) override {
    retry("SET " + std::string(key), [&] { command(Args().add("SET").add(key).add(data)); });
  }

  std::unique_ptr<Upload> begin_upload(std::string_view key) override {
    return std::make_unique<RedisUpload>(*this, std::string(key));
  }

  // MULTI RENAME temp key, PERSIST key, SET temp.completed EX ttl, EXEC: the
  // mark tells a second completion of the same token that it is done.
  void complete_detached(std::string_view key, std::string_view token) override {
    const auto where = m_endpoint + ": " + std::string(key);
    const auto j = parse_upload_token(token, "redis", key, m_endpoint);
    const auto temp = token_string(j, "temp", where);
    if (!starts_with(temp, std::string(key) + std::string(k_upload_marker)))
      throw Error(Errc::invalid_argument, where + ": the upload token names no temporary of this key");
    const std::string mark = temp + std::string(k_completed_suffix);
    const auto gone = [&] {
      return Error(Errc::not_found,
                   where + ": the detached upload's temporary " + temp + " no longer exists (expired or aborted); nothing was published");
    };
    retry("RENAME " + temp, [&] {
      if (!exists_now(temp)) {
        if (exists_now(mark) && exists_now(key)) return;  // completed before
        throw gone();
      }
      Args rename, persist, marked;
      rename.add("RENAME").add(temp).add(key);
      persist.add("PERSIST").add(key);
      marked.add("SET").add(mark).add("1").add("EX").add(std::uint64_t{k_upload_ttl_s});
      auto r = transaction({rename, persist, marked});
      // EXEC answers each command: a RENAME of a temporary that expired
      // since EXISTS fails there, not as EXEC.
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) throw protocol_error("EXEC");
      if (r->element[0]->type == REDIS_REPLY_ERROR) {
        if (exists_now(mark) && exists_now(key)) return;  // a retry after a lost reply
        throw gone();
      }
    });
  }

  void remove(std::string_view key) override {
    retry("DEL " + std::string(key), [&] { command(Args().add("DEL").add(key)); });
  }

  std::vector<std::string> list(std::string_view prefix) override {
    return retry("SCAN " + std::string(prefix), [&] {
      std::string pattern;
      for (char c : prefix) {
        if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') pattern += '\\';
        pattern += c;
      }
      pattern += '*';
      std::vector<std::string> keys;
      std::string cursor = "0";
      do {
        auto r = command(Args().add("SCAN").add(cursor).add("MATCH").add(pattern).add("COUNT").add(std::uint64_t{1000}));
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) throw protocol_error("SCAN");
        cursor.assign(r->element[0]->str, r->element[0]->len);
        const auto* arr = r->element[1];
        for (std::size_t i = 0; i < arr->elements; ++i) {
          std::string k(arr->element[i]->str, arr->element[i]->len);
          if (k.find(k_upload_marker) == std::string::npos) keys.push_back(std::move(k));
        }
      } while (cursor != "0");
      std::sort(keys.begin(), keys.end());
      keys.erase(std::unique(keys.begin(), keys.end()), keys.end());  // SCAN may repeat keys
      return keys;
    });
  }

  std::unique_ptr<Backend> clone() const override { return std::make_unique<RedisBackend>(m_url, m_options); }

  template <typename F>
  auto retry(std::string what, F&& f) -> decltype(f()) {
    return with_retries(m_options.retry, m_endpoint, what, std::forward<F>(f));
  }

  // Runs one command on the connection (connecting first when needed).
  // A lost connection is dropped (the next call reconnects) and reported as
  // TransientError; an error reply is classified.
  ReplyPtr command(const Args& args, Cleanup cleanup = Cleanup::no) {
    if (cleanup == Cleanup::no) util::throw_if_interrupted();
    auto& c = connection();
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    args.fill(argv, lens);
    ReplyPtr r(static_cast<redisReply*>(redisCommandArgv(&c, args.argc(), argv.data(), lens.data())));
    if (!r) {
      const std::string why = m_ctx->errstr;
      m_ctx.reset();
      throw TransientError(why.empty() ? "connection lost" : why);
    }
    check(*r, args.name());
    return r;
  }

  // MULTI ... EXEC of several commands; returns EXEC's reply.
  ReplyPtr transaction(const std::vector<Args>& cmds) {
    auto& c = connection();
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    const char* multi = "MULTI";
    const char* exec = "EXEC";
    redisAppendCommand(&c, multi);
    for (const auto& a : cmds) {
      a.fill(argv, lens);
      redisAppendCommandArgv(&c, a.argc(), argv.data(), lens.data());
    }
    redisAppendCommand(&c, exec);
    ReplyPtr last;
    for (std::size_t i = 0; i < cmds.size() + 2; ++i) {
      void* raw = nullptr;
      if (redisGetReply(&c, &raw) != REDIS_OK || !raw) {
        const std::string why = m_ctx->errstr;
        m_ctx.reset();
        throw TransientError(why.empty() ? "connection lost" : why);
      }
      last.reset(static_cast<redisReply*>(raw));
      check(*last, i == 0 ? "MULTI" : i == cmds.size() + 1 ? "EXEC" : cmds[i - 1].name());
    }
    return last;
  }

  Error protocol_error(std::string_view what) const {
    return Error(Errc::remote_unavailable, m_endpoint + ": unexpected reply to " + std::string(what));
  }

  bool exists_now(std::string_view key) {
    auto r = command(Args().add("EXISTS").add(key));
    return r->integer > 0;
  }

 private:
  redisContext& connection() {
    if (m_ctx) return *m_ctx;
    ContextPtr c(redisConnectWithTimeout(m_url.host.c_str(), m_url.port, to_timeval(m_options.connect_timeout)));
    if (!c) throw Error(Errc::internal, m_endpoint + ": cannot allocate a Redis context");
    if (c->err) throw TransientError(std::string("cannot connect: ") + c->errstr);
    if (redisSetTimeout(c.get(), to_timeval(m_options.io_timeout)) != REDIS_OK)
      throw TransientError(std::string("cannot set timeout: ") + c->errstr);
    m_ctx = std::move(c);
    if (!m_url.password.empty()) command(Args().add("AUTH").add(m_url.password));
    if (m_url.db != 0) command(Args().add("SELECT").add(static_cast<std::uint64_t>(m_url.db)));
    return *m_ctx;
  }

  void check(const redisReply& r, std::string_view cmd) {
    if (r.type != REDIS_REPLY_ERROR) return;
    const std::string msg(r.str, r.len);
    for (std::string_view t : {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"})
      if (starts_with(msg, t)) throw TransientError(std::string(cmd) + ": " + msg);
    for (std::string_view t : {"NOAUTH", "WRONGPASS", "NOPERM", "ERR invalid password", "ERR AUTH"})
      if (starts_with(msg, t))
        throw Error(Errc::remote_unavailable, m_endpoint + ": authentication refused (" + msg + ")");
    throw Error(Errc::remote_unavailable, m_endpoint + ": " + std::string(cmd) + ": " + msg);
  }

  static util::ByteVector bytes_of(const redisReply& r) {
    util::ByteVector out(r.len);
    if (r.len) std::memcpy(out.data(), r.str, r.len);
    return out;
  }

  Url m_url;
  Options m_options;
  std::string m_endpoint;
  ContextPtr m_ctx;
};

RedisUpload::RedisUpload(RedisBackend& backend, std::string key) : m_backend(backend), m_key(std::move(key)) {
  std::random_device rd;
  m_temp = fmt::format("{}{}{}-{:08x}{:08x}", m_key, k_upload_marker, ::getpid(), rd(), rd());
}

void RedisUpload::write(util::ByteSpan data) {
  if (m_done || m_failed) throw Error(Errc::internal, m_backend.endpoint() + ": write after the upload ended");
  util::throw_if_interrupted();
  m_buffer.insert(m_buffer.end(), data.begin(), data.end());
  m_size += data.size();
  if (m_buffer.size() >= m_backend.options().part_size) flush();
}

void RedisUpload::flush() {
  if (m_buffer.empty()) return;
  try {
    m_backend.retry("SETRANGE " + m_temp, [&] {
      m_backend.command(Args().add("SETRANGE").add(m_temp).add(m_flushed).add(m_buffer));
      if (!m_started) m_backend.command(Args().add("EXPIRE").add(m_temp).add(std::uint64_t{k_upload_ttl_s}));
    });
  } catch (...) {
    m_failed = true;
    abort();
    throw;
  }
  m_started = true;
  m_flushed += m_buffer.size();
  m_buffer.clear();
}

void RedisUpload::complete() {
  if (m_done || m_failed) throw Error(Errc::internal, m_backend.endpoint() + ": complete after the upload ended");
  if (!m_started) {
    m_backend.put(m_key, m_buffer);
    m_buffer.clear();
    m_done = true;
    return;
  }
  flush();
  try {
    int attempt = 0;
    m_backend.retry("RENAME " + m_temp, [&] {
      ++attempt;
      try {
        Args rename, persist;
        rename.add("RENAME").add(m_temp).add(m_key);
        persist.add("PERSIST").add(m_key);
        m_backend.transaction({rename, persist});
      } catch (const TransientError&) {
        throw;
      } catch (const Error&) {
        // A retried RENAME whose first try went through but whose reply was
        // lost finds no temporary: the object is there, whole.
        if (attempt > 1 && !m_backend.exists_now(m_temp)) {
          auto r = m_backend.command(Args().add("STRLEN").add(m_key));
          if (static_cast<std::uint64_t>(r->integer) == m_size) return;
        }
        throw;
      }
    });
  } catch (...) {
    m_failed = true;
    abort();
    throw;
  }
  m_done = true;
}

std::string RedisUpload::detach() {
  if (m_done || m_failed) throw Error(Errc::internal, m_backend.endpoint() + ": detach after the upload ended");
  const bool empty = !m_started && m_buffer.empty();  // SETRANGE of nothing creates no key
  flush();
  try {
    // A full day from now for the coordinator to complete it.
    m_backend.retry("EXPIRE " + m_temp, [&] {
      if (empty)
        m_backend.command(Args().add("SET").add(m_temp).add("").add("EX").add(std::uint64_t{k_upload_ttl_s}));
      else
        m_backend.command(Args().add("EXPIRE").add(m_temp).add(std::uint64_t{k_upload_ttl_s}));
    });
  } catch (...) {
    m_started = true;
    m_failed = true;
    abort();
    throw;
  }
  m_done = true;  // left for complete_detached(), or to expire
  auto token = new_upload_token("redis", m_key, m_size);
  token["temp"] = m_temp;
  return token.dump();
}

void RedisUpload::abort() noexcept {
  if (m_done) return;
  m_done = true;
  if (!m_started) return;
  try {
    m_backend.command(Args().add("DEL").add(m_temp), Cleanup::yes);
  } catch (...) {
    // The temporary expires by itself.
  }
}

}  // namespace

std::unique_ptr<Backend> make_redis_backend(const Url& url, const Options& options) {
  return std::make_unique<RedisBackend>(url, options);
}

}  // namespace mithril::storage
