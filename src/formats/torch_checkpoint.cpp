#include "formats/torch_checkpoint.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <numeric>

#include <fmt/format.h>

#include "formats/torch_dtype.hpp"
#include "formats/zip_reader.hpp"
#include "mithril/error.hpp"

namespace mithril::formats {
namespace {

constexpr std::size_t k_max_depth = 1000;
constexpr std::uint64_t k_max_pickle_size = std::uint64_t{1} << 30;
constexpr std::uint64_t k_max_small_record = 4096;

// The pickled magic number torch < 1.6 writes first (serialization.py,
// MAGIC_NUMBER = 0x1950a86a20f9469cfc6c) as LONG1 with 10 bytes.
constexpr std::array<unsigned char, 12> k_legacy_magic{0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                                       0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

bool mul_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  return __builtin_mul_overflow(a, b, &out);
}
bool add_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  return __builtin_add_overflow(a, b, &out);
}

// Walks the value tree, naming tensors and scalar leaves by dotted paths.
class Walker {
 public:
  Walker(const PickleTree& tree, std::string_view ctx, std::vector<std::pair<std::string, std::uint32_t>>& tensors,
         std::vector<TorchValue>& values)
      : m_tree(tree), m_ctx(ctx), m_tensors(tensors), m_values(values),
        m_budget(16 * tree.node_count() + 1024) {}

  void walk(PickleId id, const std::string& path, std::size_t depth) {
    if (depth > k_max_depth)
      throw Error(Errc::corrupt, fmt::format("{}: data.pkl: objects nested deeper than {} levels (or a cycle) at '{}'",
                                             m_ctx, k_max_depth, path.substr(0, 200)));
    // Shared sub-objects are walked once per path; a memo-built DAG could make
    // that exponential, so the total work is capped.
    if (m_budget-- == 0)
      throw Error(Errc::unsupported, fmt::format("{}: data.pkl: objects shared too many times to be named", m_ctx));
    const auto& n = m_tree.node(id);
    switch (n.kind) {
      case PickleKind::tensor:
        m_tensors.emplace_back(path, n.index);
        return;
      case PickleKind::dict:
      case PickleKind::ordered_dict:
        if (n.items.empty()) break;
        for (std::size_t i = 0; i + 1 < n.items.size(); i += 2)
          walk(n.items[i + 1], join(path, key_name(n.items[i])), depth + 1);
        return;
      case PickleKind::list:
      case PickleKind::tuple: {
        const bool leaf = std::all_of(n.items.begin(), n.items.end(), [&](PickleId c) {
          const auto k = m_tree.node(c).kind;
          return k != PickleKind::tensor && k != PickleKind::dict && k != PickleKind::ordered_dict &&
                 k != PickleKind::list && k != PickleKind::tuple;
        });
        if (leaf) break;
        for (std::size_t i = 0; i < n.items.size(); ++i) walk(n.items[i], join(path, std::to_string(i)), depth + 1);
        return;
      }
      default:
        break;
    }
    m_values.push_back({path, n.kind, pickle_repr(m_tree, id)});
  }

 private:
  static std::string join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }
  std::string key_name(PickleId key) const {
    const auto& k = m_tree.node(key);
    if (k.kind == PickleKind::string) return k.text;
    return pickle_repr(m_tree, key);  // 3, True, (1, 2), b'x'
  }

  const PickleTree& m_tree;
  std::string_view m_ctx;
  std::vector<std::pair<std::string, std::uint32_t>>& m_tensors;
  std::vector<TorchValue>& m_values;
  std::size_t m_budget;
};

std::string small_record(const ZipReader& zip, const std::string& name) {
  const auto* e = zip.find(name);
  if (!e) return {};
  const auto bytes = zip.extract(*e, k_max_small_record);
  return std::string(util::as_chars(bytes));
}

}  // namespace

std::uint64_t TorchTensor::numel() const noexcept {
  std::uint64_t n = 1;
  for (auto d : shape) n *= d;  // bounded by the storage check at read time
  return n;
}

bool TorchTensor::contiguous() const noexcept {
  // torch: dimensions of size 1 may have any stride; an empty tensor is contiguous.
  if (numel() == 0) return true;
  std::uint64_t expected = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    if (shape[i] == 1) continue;
    if (stride[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

std::pair<std::uint64_t, std::uint64_t> TorchTensor::byte_extent() const noexcept {
  if (numel() == 0) return {0, 0};
  std::uint64_t last = storage_offset;
  for (std::size_t i = 0; i < shape.size(); ++i) last += (shape[i] - 1) * stride[i];
  return {storage_offset * element_size, (last + 1) * element_size};
}

bool looks_like_legacy_torch_save(util::ByteSpan file) noexcept {
  const auto head = file.subspan(0, std::min<std::size_t>(file.size(), 32));
  const auto* m = reinterpret_cast<const std::byte*>(k_legacy_magic.data());
  if (std::search(head.begin(), head.end(), m, m + k_legacy_magic.size()) != head.end()) return true;
  // torch < 0.4 wrote a tar archive ("ustar" magic at offset 257, POSIX.1-1988).
  return file.size() >= 262 && std::memcmp(file.data() + 257, "ustar", 5) == 0;
}

util::ByteSpan torch_storage_bytes(util::ByteSpan file, const TorchStorage& s) {
  if (!s.stored)
    throw Error(Errc::unsupported, fmt::format("{}: storage record is compressed; only STORED records can be "
                                               "read in place", s.record));
  if (s.data_offset > file.size() || s.data_size > file.size() - s.data_offset)
    throw Error(Errc::invalid_argument, fmt::format("{}: storage lies outside the given file", s.record));
  return file.subspan(s.data_offset, s.data_size);
}

TorchCheckpoint read_torch_checkpoint(util::ByteSpan file, std::string_view file_name) {
  if (looks_like_legacy_torch_save(file))
    throw Error(Errc::unsupported, fmt::format("{}: legacy torch.save format (torch < 1.6) is not supported; re-save "
                                               "with torch >= 1.6",
                                               file_name));
  const ZipReader zip(file, file_name);
  TorchCheckpoint ck;
  if (zip.entries().empty()) throw Error(Errc::corrupt, fmt::format("{}: empty zip archive, not a torch.save file", file_name));

  // torch's reader (caffe2/serialize/inline_container.cc) takes the archive
  // name from the first record, up to its first '/'.
  const auto& first = zip.entries().front().name;
  const auto slash = first.find('/');
  if (slash == std::string::npos)
    throw Error(Errc::corrupt, fmt::format("{}: first zip record '{}' is not inside a directory; not a torch.save file",
                                           file_name, first.substr(0, 200)));
  ck.archive_prefix = first.substr(0, slash + 1);
  const std::string& prefix = ck.archive_prefix;
  if (zip.find(prefix + "constants.pkl") ||
      std::any_of(zip.entries().begin(), zip.entries().end(),
                  [&](const ZipEntry& e) { return e.name.starts_with(prefix + "code/"); }))
    throw Error(Errc::unsupported, fmt::format("{}: TorchScript archive (torch.jit.save), not a torch.save file", file_name));
  const auto* pkl = zip.find(prefix + "data.pkl");
  if (!pkl) throw Error(Errc::corrupt, fmt::format("{}: no {}data.pkl record; not a torch.save file", file_name, prefix));

  ck.byteorder = small_record(zip, prefix + "byteorder");
  if (!ck.byteorder.empty() && ck.byteorder != "little" && ck.byteorder != "big")
    throw Error(Errc::corrupt, fmt::format("{}: byteorder record holds '{}', not 'little' or 'big'", file_name,
                                           ck.byteorder.substr(0, 40)));

  const auto pkl_bytes = zip.extract(*pkl, k_max_pickle_size);
  const std::string ctx = fmt::format("{}: {}", file_name, pkl->name);
  ck.pickle = unpickle(pkl_bytes, ctx);
  const auto& tree = ck.pickle;

  // ---- storages: element type, record, sizes ----
  const auto& ps = tree.storages();
  std::vector<TorchStorage> storages(ps.size());
  std::vector<std::string> viewed_as(ps.size());  // dtype of the tensors viewing an untyped storage
  for (const auto& t : tree.tensors()) {
    auto& v = viewed_as[t.storage];
    if (v.empty()) {
      v = t.dtype;
    } else if (v != t.dtype) {
      throw Error(Errc::unsupported, fmt::format("{}: storage '{}' is viewed both as {} and as {}", ctx,
                                                 ps[t.storage].key, v, t.dtype));
    }
  }
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const auto& p = ps[i];
    auto& s = storages[i];
    s.key = p.key;
    s.record = prefix + "data/" + p.key;
    s.storage_type = p.storage_type;
    s.location = p.location;
    const auto* e = zip.find(s.record);
    if (!e) throw Error(Errc::corrupt, fmt::format("{}: storage '{}' has no record {}", file_name, p.key, s.record));
    std::uint64_t nbytes;
    if (p.storage_type == "UntypedStorage") {
      nbytes = p.numel;
      const auto* info = torch_dtype_by_name(viewed_as[i].empty() ? "uint8" : viewed_as[i]);
      if (!info) throw Error(Errc::corrupt, fmt::format("{}: unknown dtype '{}'", ctx, viewed_as[i]));
      if (nbytes % info->element_size != 0) info = torch_dtype_by_name("uint8");  // a partial view: code as bytes
      s.torch_dtype = std::string(info->name);
      s.dtype = info->dtype;
      s.element_size = info->element_size;
      s.numel = nbytes / info->element_size;
    } else {
      const auto* info = torch_dtype_by_storage(p.storage_type);
      if (!info) throw Error(Errc::corrupt, fmt::format("{}: unknown storage class '{}'", ctx, p.storage_type));
      if (!viewed_as[i].empty() && viewed_as[i] != info->name) {
        const auto* view = torch_dtype_by_name(viewed_as[i]);
        if (!view || view->element_size != info->element_size)
          throw Error(Errc::unsupported, fmt::format("{}: storage '{}' of {} is viewed as {}", ctx, p.key,
                                                     p.storage_type, viewed_as[i]));
      }
      s.torch_dtype = std::string(info->name);
      s.dtype = info->dtype;
      s.element_size = info->element_size;
      s.numel = p.numel;
      if (mul_overflows(p.numel, info->element_size, nbytes))
        throw Error(Errc::corrupt, fmt::format("{}: storage '{}' numel {} overflows", ctx, p.key, p.numel));
    }
    if (e->size != nbytes)
      throw Error(Errc::corrupt, fmt::format("{}: storage '{}' declares {} {} elements ({} bytes) but record {} holds "
                                             "{} bytes",
                                             file_name, p.key, s.numel, s.torch_dtype, nbytes, s.record, e->size));
    s.stored = e->stored();
    s.data_offset = e->data_offset;
    s.data_size = nbytes;
    s.crc32 = e->crc32;
  }

  // ---- tensors: names, bounds ----
  std::vector<std::pair<std::string, std::uint32_t>> named;
  if (tree.root() != k_no_pickle_node) Walker(tree, file_name, named, ck.values).walk(tree.root(), "", 0);

  std::vector<std::uint32_t> order(storages.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(),
            [&](std::uint32_t a, std::uint32_t b) { return storages[a].data_offset < storages[b].data_offset; });
  std::vector<std::uint32_t> rank(storages.size());
  for (std::uint32_t r = 0; r < order.size(); ++r) rank[order[r]] = r;

  ck.tensors.reserve(named.size());
  for (auto& [name, index] : named) {
    const auto& pt = tree.tensors()[index];
    const auto& s = storages[pt.storage];
    const auto* info = torch_dtype_by_name(pt.dtype);
    if (!info) throw Error(Errc::corrupt, fmt::format("{}: tensor '{}' has unknown dtype '{}'", ctx, name, pt.dtype));
    TorchTensor t;
    t.name = std::move(name);
    t.storage = rank[pt.storage];
    t.torch_dtype = pt.dtype;
    t.dtype = info->dtype;
    t.element_size = info->element_size;
    t.shape = pt.shape;
    t.stride = pt.stride;
    t.storage_offset = pt.storage_offset;
    t.requires_grad = pt.requires_grad;
    t.is_parameter = pt.is_parameter;
    t.conj = pt.conj;
    t.neg = pt.neg;
    // Every element the view can reach must lie inside the storage; computed
    // with overflow checks since sizes and strides come from the file.
    std::uint64_t numel = 1;
    bool overflow = false;
    for (auto d : t.shape) overflow |= mul_overflows(numel, d, numel);
    if (!overflow && numel > 0) {
      std::uint64_t last = t.storage_offset, step;
      for (std::size_t i = 0; i < t.shape.size(); ++i) {
        overflow |= mul_overflows(t.shape[i] - 1, t.stride[i], step);
        overflow |= add_overflows(last, step, last);
      }
      std::uint64_t end_byte = 0;
      overflow |= add_overflows(last, 1, last) || mul_overflows(last, t.element_size, end_byte);
      if (!overflow && end_byte > s.data_size)
        throw Error(Errc::corrupt, fmt::format("{}: tensor '{}' reaches byte {} of storage '{}', which holds {} bytes",
                                               ctx, t.name, end_byte, s.key, s.data_size));
    }
    if (overflow)
      throw Error(Errc::corrupt, fmt::format("{}: tensor '{}' has sizes or strides that overflow", ctx, t.name));
    ck.tensors.push_back(std::move(t));
  }
  ck.storages.reserve(storages.size());
  for (auto i : order) ck.storages.push_back(std::move(storages[i]));
  return ck;
}

}  // namespace mithril::formats
