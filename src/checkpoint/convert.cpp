// checkpoint/convert.cpp — convert_file(): torch.save <-> safetensors.
#include "mithril/convert.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>

#include <fmt/format.h>

#include "formats/safetensors.hpp"
#include "formats/torch_checkpoint.hpp"
#include "formats/torch_writer.hpp"
#include "formats/zip_reader.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/error.hpp"
#include "util/clock.hpp"
#include "util/mapped_file.hpp"

namespace mithril {
namespace {

namespace fs = std::filesystem;
using formats::DType;

ConvertFormat output_format(const fs::path& out, ConvertFormat to) {
  if (to != ConvertFormat::automatic) return to;
  auto ext = out.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".safetensors") return ConvertFormat::safetensors;
  if (ext == ".pt" || ext == ".pth" || ext == ".bin" || ext == ".ckpt") return ConvertFormat::torch;
  throw Error(Errc::invalid_argument,
              fmt::format("{}: cannot tell the output format from the extension; use .safetensors or .pt, or say "
                          "--to safetensors|torch",
                          out.string()));
}

std::string list_names(const std::vector<std::string>& names, std::size_t max = 5) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < max; ++i) out += (i ? ", " : "") + (names[i].empty() ? "<root>" : names[i]);
  if (names.size() > max) out += fmt::format(", ... (+{} more)", names.size() - max);
  return out;
}

// Sign bits to flip for a lazily negated tensor: byte positions inside one
// element (little-endian), or empty when negation is not a sign flip.
std::vector<unsigned> sign_bytes(DType t) {
  switch (t) {
    case DType::F16: case DType::BF16: return {1};
    case DType::F32: return {3};
    case DType::F64: return {7};
    case DType::F8_E4M3: case DType::F8_E5M2: return {0};
    case DType::C64: return {3, 7};
    default: return {};
  }
}

// Copies the elements a view reaches, in row-major order, into `out`;
// byte-swaps `swap_unit`-byte words (0: no swap) and flips the sign bytes in
// `flip` of every element.
void gather_view(const formats::TorchTensor& t, util::ByteSpan storage, unsigned swap_unit,
                 const std::vector<unsigned>& flip, util::ByteVector& out) {
  const std::uint64_t es = t.element_size;
  const std::uint64_t n = t.numel();
  out.resize(n * es);
  if (n == 0) return;
  const std::size_t rank = t.shape.size();
  std::vector<std::uint64_t> idx(rank, 0);
  // Innermost dimension copied as a run when its elements are adjacent.
  const std::uint64_t inner = rank ? t.shape[rank - 1] : 1;
  const bool run = rank == 0 || t.stride[rank - 1] == 1 || inner == 1;
  std::byte* dst = out.data();
  for (std::uint64_t done = 0; done < n; done += inner) {
    std::uint64_t e = t.storage_offset;
    for (std::size_t d = 0; d + 1 < rank; ++d) e += idx[d] * t.stride[d];
    if (run) {
      std::memcpy(dst, storage.data() + e * es, inner * es);
      dst += inner * es;
    } else {
      const std::uint64_t s = t.stride[rank - 1];
      for (std::uint64_t k = 0; k < inner; ++k, dst += es) std::memcpy(dst, storage.data() + (e + k * s) * es, es);
    }
    for (std::size_t d = rank >= 1 ? rank - 1 : 0; d-- > 0;) {
      if (++idx[d] < t.shape[d]) break;
      idx[d] = 0;
    }
  }
  if (swap_unit > 1)
    for (std::size_t i = 0; i < out.size(); i += swap_unit) std::reverse(out.begin() + i, out.begin() + i + swap_unit);
  if (!flip.empty())
    for (std::size_t i = 0; i < out.size(); i += es)
      for (unsigned b : flip) out[i + b] ^= std::byte{0x80};
}

ConvertResult torch_to_safetensors(const fs::path& in, util::ByteSpan bytes, const fs::path& out,
                                   const ConvertOptions& o, const std::function<void()>& before_commit) {
  const auto ck = formats::read_torch_checkpoint(bytes, in.string());
  const bool big_endian = ck.byteorder == "big";
  ConvertResult r;
  r.from = "torch";
  r.to = "safetensors";

  // Storage bytes: in place when STORED, else extracted (deflated archives).
  std::vector<util::ByteVector> extracted(ck.storages.size());
  std::vector<util::ByteSpan> storage_bytes(ck.storages.size());
  std::unique_ptr<formats::ZipReader> zip;
  for (std::size_t i = 0; i < ck.storages.size(); ++i) {
    const auto& s = ck.storages[i];
    if (s.stored) {
      storage_bytes[i] = formats::torch_storage_bytes(bytes, s);
    } else {
      if (!zip) zip = std::make_unique<formats::ZipReader>(bytes, in.string());
      extracted[i] = zip->extract(*zip->find(s.record), s.data_size);
      storage_bytes[i] = extracted[i];
    }
  }

  std::vector<std::size_t> views_of(ck.storages.size(), 0);
  for (const auto& t : ck.tensors) ++views_of[t.storage];

  std::vector<formats::TensorView> views;
  views.reserve(ck.tensors.size());
  std::vector<util::ByteVector> copies(ck.tensors.size());  // owned bytes of gathered views
  std::set<std::string> names;
  for (std::size_t i = 0; i < ck.tensors.size(); ++i) {
    const auto& t = ck.tensors[i];
    const std::string name = t.name.empty() ? "tensor" : t.name;
    if (!t.dtype)
      throw Error(Errc::unsupported, fmt::format("{}: tensor '{}' has dtype {}, which safetensors cannot hold",
                                                 in.string(), name, t.torch_dtype));
    if (!names.insert(name).second)
      throw Error(Errc::invalid_argument,
                  fmt::format("{}: two tensors would both be named '{}' once flattened", in.string(), name));
    std::vector<unsigned> flip;
    if (t.neg) {
      flip = sign_bytes(*t.dtype);
      if (flip.empty())
        throw Error(Errc::unsupported, fmt::format("{}: tensor '{}' is a lazily negated {} view; not supported",
                                                   in.string(), name, t.torch_dtype));
    }
    if (t.conj) {
      if (*t.dtype != DType::C64)
        throw Error(Errc::unsupported, fmt::format("{}: tensor '{}' has the conjugate bit on a {} tensor", in.string(),
                                                   name, t.torch_dtype));
      // Conjugation flips the imaginary part's sign; combined with a
      // negation the imaginary flip cancels out.
      if (flip.empty())
        flip = {7};
      else
        flip = {3};
    }
    const unsigned swap_unit = big_endian && t.element_size > 1 ? (*t.dtype == DType::C64 ? 4u : t.element_size) : 0u;
    if (views_of[t.storage] > 1) ++r.shared_copies;
    const auto storage = storage_bytes[t.storage];
    const auto [begin, end] = t.byte_extent();
    formats::TensorView v;
    v.name = name;
    v.dtype = *t.dtype;
    v.shape = t.shape;
    if (t.contiguous() && swap_unit == 0 && flip.empty()) {
      v.data = storage.subspan(begin, end - begin);  // zero-copy: the view is a plain slice
    } else {
      gather_view(t, storage, swap_unit, flip, copies[i]);
      v.data = copies[i];
    }
    views.push_back(std::move(v));
  }
  r.tensors = views.size();
  r.dropped_values = ck.values.size();
  if (o.note) {
    if (ck.tensors.size() == 1 && ck.tensors[0].name.empty())
      o.note(fmt::format("{}: the file holds a bare tensor; it is written as 'tensor'", in.string()));
    if (r.shared_copies)
      o.note(fmt::format("{}: {} tensors share a storage with another tensor; each is written as its own copy",
                         in.string(), r.shared_copies));
    if (!ck.values.empty()) {
      std::vector<std::string> dropped;
      for (const auto& v : ck.values) dropped.push_back(v.name);
      o.note(fmt::format("{}: {} non-tensor values are not carried over (safetensors holds only tensors): {}",
                         in.string(), dropped.size(), list_names(dropped)));
    }
  }
  formats::write_safetensors(out, views, {}, o.force ? util::Overwrite::allow : util::Overwrite::refuse, before_commit);
  return r;
}

ConvertResult safetensors_to_torch(const fs::path& in, util::ByteSpan bytes, const fs::path& out,
                                   const ConvertOptions& o, const std::function<void()>& before_commit) {
  const auto header = formats::parse_safetensors(bytes, in.string());
  ConvertResult r;
  r.from = "safetensors";
  r.to = "torch";
  std::vector<formats::TensorView> views;
  views.reserve(header.tensors.size());
  for (const auto& t : header.tensors)
    views.push_back({t.name, t.dtype, t.shape, bytes.subspan(header.data_offset + t.begin, t.size())});
  r.tensors = views.size();
  r.dropped_values = header.metadata.size();
  if (o.note && !header.metadata.empty()) {
    std::vector<std::string> keys;
    for (const auto& [k, v] : header.metadata) keys.push_back(k);
    o.note(fmt::format("{}: {} __metadata__ entries are not carried over: {}", in.string(), keys.size(),
                       list_names(keys)));
  }
  formats::write_torch_checkpoint(out, views, o.force ? util::Overwrite::allow : util::Overwrite::refuse,
                                  before_commit);
  return r;
}

}  // namespace

ConvertResult convert_file(const fs::path& input, const fs::path& output, const ConvertOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const ConvertFormat to = output_format(output, options.to);
  if (is_mcp_file(input))
    throw Error(Errc::unsupported,
                fmt::format("{}: is an .mcp file; decompress it first, then convert the result", input.string()));
  if (fs::exists(output) && fs::equivalent(input, output))
    throw Error(Errc::invalid_argument, fmt::format("{}: input and output are the same file", output.string()));
  const util::MappedFile file(input);
  // A file written while it was read (a job saving over it in place) would
  // give tensors of two versions: refused before the output takes its name,
  // as compress does. (One shrunk under the mapping raises SIGBUS, which the
  // CLI reports; where recover_from_shrinking_files() is in effect the reads
  // find zeros: this check refuses them, and a parse that fails on them says
  // the file shrank.)
  const auto unchanged = [&] { file.check_unchanged("converted"); };
  ConvertResult r = util::check_if_failed(
      [&] {
        const auto bytes = file.bytes();
        const bool is_torch = formats::looks_like_zip(bytes) || formats::looks_like_legacy_torch_save(bytes);
        const bool is_safetensors = !is_torch && formats::looks_like_safetensors(bytes);
        if (!is_torch && !is_safetensors)
          throw Error(Errc::unsupported, fmt::format("{}: neither a torch.save nor a safetensors file", input.string()));
        if ((is_torch && to == ConvertFormat::torch) || (is_safetensors && to == ConvertFormat::safetensors))
          throw Error(Errc::invalid_argument, fmt::format("{}: is already a {} file; nothing to convert",
                                                          input.string(), is_torch ? "torch.save" : "safetensors"));
        return is_torch ? torch_to_safetensors(input, bytes, output, options, unchanged)
                        : safetensors_to_torch(input, bytes, output, options, unchanged);
      },
      [&] { file.check_intact(); });
  r.output_bytes = fs::file_size(output);
  r.seconds = util::seconds_since(t0);
  return r;
}

}  // namespace mithril
