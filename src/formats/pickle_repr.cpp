// Rendering of pickle values for summaries and messages (pickle_repr).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "formats/pickle.hpp"
#include "formats/pickle_text.hpp"

namespace mithril::formats {

using detail::escape;
using detail::quote;

std::string_view pickle_kind_name(PickleKind kind) noexcept {
  switch (kind) {
    case PickleKind::none: return "None";
    case PickleKind::boolean: return "bool";
    case PickleKind::integer: return "int";
    case PickleKind::big_integer: return "int";
    case PickleKind::floating: return "float";
    case PickleKind::complex: return "complex";
    case PickleKind::string: return "str";
    case PickleKind::bytes: return "bytes";
    case PickleKind::list: return "list";
    case PickleKind::tuple: return "tuple";
    case PickleKind::set: return "set";
    case PickleKind::dict: return "dict";
    case PickleKind::ordered_dict: return "OrderedDict";
    case PickleKind::global: return "global";
    case PickleKind::dtype: return "torch.dtype";
    case PickleKind::size: return "torch.Size";
    case PickleKind::device: return "torch.device";
    case PickleKind::storage: return "storage";
    case PickleKind::tensor: return "tensor";
  }
  return "?";
}

namespace {

std::string big_int_decimal(std::string_view le) {
  // Magnitude by repeated division by 10 of a little-endian byte array.
  std::vector<unsigned> mag(le.size());
  for (std::size_t i = 0; i < le.size(); ++i) mag[i] = static_cast<unsigned char>(le[i]);
  const bool negative = !le.empty() && (mag.back() & 0x80);
  if (negative) {  // two's complement negate
    unsigned carry = 1;
    for (auto& b : mag) {
      const unsigned v = (~b & 0xFFu) + carry;
      b = v & 0xFFu;
      carry = v >> 8;
    }
  }
  std::string digits;
  auto is_zero = [&] { return std::all_of(mag.begin(), mag.end(), [](unsigned b) { return b == 0; }); };
  while (!is_zero()) {
    unsigned rem = 0;
    for (std::size_t i = mag.size(); i-- > 0;) {
      const unsigned cur = (rem << 8) | mag[i];
      mag[i] = cur / 10;
      rem = cur % 10;
    }
    digits += static_cast<char>('0' + rem);
  }
  if (digits.empty()) digits = "0";
  if (negative) digits += '-';
  std::reverse(digits.begin(), digits.end());
  return digits;
}

std::string float_repr(double d) {
  std::string s = fmt::format("{}", d);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // Python prints 3.0, not 3
  return s;
}

bool is_scalar(PickleKind k) {
  return k == PickleKind::none || k == PickleKind::boolean || k == PickleKind::integer ||
         k == PickleKind::big_integer || k == PickleKind::floating || k == PickleKind::complex ||
         k == PickleKind::string || k == PickleKind::bytes || k == PickleKind::dtype || k == PickleKind::device;
}

}  // namespace

std::string pickle_repr(const PickleTree& tree, PickleId id, std::size_t max_chars) {
  const auto& n = tree.node(id);
  switch (n.kind) {
    case PickleKind::none: return "None";
    case PickleKind::boolean: return n.integer ? "True" : "False";
    case PickleKind::integer: return std::to_string(n.integer);
    case PickleKind::big_integer:
      return n.text.size() <= 64 ? big_int_decimal(n.text) : fmt::format("<int of {} bytes>", n.text.size());
    case PickleKind::floating: return float_repr(n.real);
    case PickleKind::complex: {
      // Python: (1+2j), 2j, (-0-1j); parts without a forced ".0".
      const std::string im = fmt::format("{}j", n.imag);
      if (n.real == 0 && !std::signbit(n.real)) return im;
      return fmt::format("({}{}{})", n.real, std::signbit(n.imag) || std::isnan(n.imag) ? "" : "+", im);
    }
    case PickleKind::string: return quote(n.text, false, max_chars);
    case PickleKind::bytes: return "b" + quote(n.text, true, max_chars);
    case PickleKind::dtype: return "torch." + n.text;
    case PickleKind::device: {
      const auto colon = n.text.find(':');
      if (colon == std::string::npos) return "device(type='" + escape(n.text) + "')";
      return "device(type='" + escape(n.text.substr(0, colon)) + "', index=" + escape(n.text.substr(colon + 1)) + ")";
    }
    case PickleKind::global: return escape(n.text);
    case PickleKind::storage: return "storage('" + escape(tree.storages()[n.index].key) + "')";
    case PickleKind::tensor: {
      const auto& t = tree.tensors()[n.index];
      return fmt::format("tensor({}, [{}])", t.dtype, fmt::join(t.shape, ", "));
    }
    case PickleKind::size:
    case PickleKind::list:
    case PickleKind::tuple:
    case PickleKind::set: {
      const char* open = n.kind == PickleKind::list ? "[" : n.kind == PickleKind::set ? "{" : "(";
      const char* close = n.kind == PickleKind::list ? "]" : n.kind == PickleKind::set ? "}" : ")";
      std::string out = n.kind == PickleKind::size ? "torch.Size([" : open;
      bool ok = true;
      for (std::size_t i = 0; i < n.items.size() && ok; ++i) {
        if (!is_scalar(tree.node(n.items[i]).kind)) ok = false;
        else {
          if (i) out += ", ";
          out += pickle_repr(tree, n.items[i], max_chars);
          if (out.size() > max_chars) ok = false;
        }
      }
      if (ok) {
        if (n.kind == PickleKind::set && n.items.empty()) return "set()";
        if (n.kind == PickleKind::tuple && n.items.size() == 1) out += ",";
        return out + (n.kind == PickleKind::size ? "])" : close);
      }
      return fmt::format("{}({})", pickle_kind_name(n.kind), n.items.size());
    }
    case PickleKind::dict:
    case PickleKind::ordered_dict:
      if (n.items.empty()) return n.kind == PickleKind::dict ? "{}" : "OrderedDict()";
      return fmt::format("{}({})", pickle_kind_name(n.kind), n.items.size() / 2);
  }
  return "?";
}

}  // namespace mithril::formats
