#include "formats/torch_writer.hpp"

#include <set>
#include <string>

#include <fmt/format.h>

#include "formats/pickle_text.hpp"
#include "formats/torch_dtype.hpp"
#include "mithril/error.hpp"

namespace mithril::formats {
namespace {

constexpr std::string_view k_archive = "archive/";

// Appends protocol-2 opcodes (encodings from CPython's Lib/pickletools.py).
class PickleWriter {
 public:
  void raw(std::string_view s) { util::append_bytes(m_out, util::as_bytes(s)); }
  void op(char c) { m_out.push_back(static_cast<std::byte>(c)); }
  void global(std::string_view module, std::string_view name) {
    op('c');
    raw(module);
    op('\n');
    raw(name);
    op('\n');
  }
  void string(std::string_view s) {  // BINUNICODE
    op('X');
    util::append_le<std::uint32_t>(m_out, static_cast<std::uint32_t>(s.size()));
    raw(s);
  }
  void integer(std::int64_t v) {
    if (v >= 0 && v < 0x100) {
      op('K');  // BININT1
      m_out.push_back(static_cast<std::byte>(v));
    } else if (v >= 0 && v < 0x10000) {
      op('M');  // BININT2
      util::append_le<std::uint16_t>(m_out, static_cast<std::uint16_t>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');  // BININT
      util::append_le<std::int32_t>(m_out, static_cast<std::int32_t>(v));
    } else {
      // LONG1: shortest little-endian two's complement.
      std::uint8_t bytes[8];
      auto u = static_cast<std::uint64_t>(v);
      for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::uint8_t>(u >> (8 * i));
      int n = 8;
      while (n > 1 && ((bytes[n - 1] == 0x00 && !(bytes[n - 2] & 0x80)) || (bytes[n - 1] == 0xFF && (bytes[n - 2] & 0x80))))
        --n;
      op('\x8a');
      m_out.push_back(static_cast<std::byte>(n));
      for (int i = 0; i < n; ++i) m_out.push_back(static_cast<std::byte>(bytes[i]));
    }
  }
  void tuple_of(const std::vector<std::uint64_t>& v) {
    if (v.size() > 3) op('(');
    for (auto x : v) integer(static_cast<std::int64_t>(x));
    switch (v.size()) {
      case 0: op(')'); break;       // EMPTY_TUPLE
      case 1: op('\x85'); break;    // TUPLE1
      case 2: op('\x86'); break;    // TUPLE2
      case 3: op('\x87'); break;    // TUPLE3
      default: op('t'); break;      // TUPLE
    }
  }
  util::ByteVector take() { return std::move(m_out); }

 private:
  util::ByteVector m_out;
};

// torch's contiguous strides: a size-0 or size-1 dimension counts as 1.
std::vector<std::uint64_t> contiguous_strides(const std::vector<std::uint64_t>& shape) {
  std::vector<std::uint64_t> stride(shape.size());
  std::uint64_t s = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    stride[i] = s;
    s *= std::max<std::uint64_t>(shape[i], 1);
  }
  return stride;
}

const TorchDTypeInfo& torch_info(const TensorView& t) {
  const auto* info = torch_dtype_for(t.dtype);
  if (!info)
    throw Error(Errc::unsupported, fmt::format("tensor '{}': dtype {} has no torch equivalent", detail::escape(t.name),
                                               dtype_info(t.dtype).name));
  return *info;
}

}  // namespace

util::ByteVector torch_state_dict_pickle(const std::vector<TensorView>& tensors) {
  constexpr std::size_t k_batch = 1000;  // pairs per SETITEMS, as CPython batches
  PickleWriter p;
  p.op('\x80');  // PROTO 2
  p.op('\x02');
  p.global("collections", "OrderedDict");
  p.op(')');
  p.op('R');
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (!detail::valid_utf8(t.name))
      throw Error(Errc::invalid_argument, fmt::format("tensor name '{}' is not UTF-8", detail::escape(t.name)));
    const auto& info = torch_info(t);
    std::uint64_t numel = 1;
    for (auto d : t.shape) numel *= d;
    if (numel * info.element_size != t.data.size())
      throw Error(Errc::invalid_argument, fmt::format("tensor '{}': {} bytes of data for {} elements of {}",
                                                      detail::escape(t.name), t.data.size(), numel, info.name));
    if (i % k_batch == 0) p.op('(');
    p.string(t.name);
    const bool typed = !info.storage_name.empty();
    p.global("torch._utils", typed ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3");
    p.op('(');
    // Persistent id ('storage', class, key, location, numel); an untyped
    // storage counts bytes.
    p.op('(');
    p.string("storage");
    if (typed)
      p.global("torch", info.storage_name);
    else
      p.global("torch.storage", "UntypedStorage");
    p.string(std::to_string(i));
    p.string("cpu");
    p.integer(static_cast<std::int64_t>(typed ? numel : t.data.size()));
    p.op('t');
    p.op('Q');  // BINPERSID
    p.integer(0);  // storage offset
    p.tuple_of(t.shape);
    p.tuple_of(contiguous_strides(t.shape));
    p.op('\x89');  // requires_grad False
    p.global("collections", "OrderedDict");  // backward hooks: empty
    p.op(')');
    p.op('R');
    if (!typed) p.global("torch", info.name);
    p.op('t');
    p.op('R');
    if (i % k_batch == k_batch - 1 || i + 1 == tensors.size()) p.op('u');  // SETITEMS
  }
  p.op('.');
  return p.take();
}

void write_torch_checkpoint(const std::vector<TensorView>& tensors, const ZipWriter::Sink& sink) {
  std::set<std::string_view> names;
  for (const auto& t : tensors)
    if (!names.insert(t.name).second)
      throw Error(Errc::invalid_argument, fmt::format("duplicate tensor name '{}'", detail::escape(t.name)));
  const auto pkl = torch_state_dict_pickle(tensors);
  ZipWriter zip(sink);
  const std::string a(k_archive);
  zip.add(a + "data.pkl", pkl);
  zip.add(a + ".format_version", util::as_bytes("1"));
  zip.add(a + ".storage_alignment", util::as_bytes("64"));
  zip.add(a + "byteorder", util::as_bytes("little"));
  for (std::size_t i = 0; i < tensors.size(); ++i) zip.add(a + "data/" + std::to_string(i), tensors[i].data);
  zip.add(a + "version", util::as_bytes("3\n"));
  zip.finish();
}

void write_torch_checkpoint(const std::filesystem::path& path, const std::vector<TensorView>& tensors,
                            util::Overwrite overwrite, const std::function<void()>& before_commit) {
  util::AtomicFile out(path, overwrite);
  write_torch_checkpoint(tensors, [&](util::ByteSpan b) { out.write(b); });
  if (before_commit) before_commit();
  out.commit();
}

}  // namespace mithril::formats
