// What the examples print, spelled the way Python prints it: `Print(a, b)` is `print(a, b)`
// (str() of each argument, one space between, a newline), `Repr(x)` is `repr(x)` for the
// types the seed examples print: ints, floats, bools, None, strings, bytes, lists, tuples and
// dicts. It exists so that each example's output can be compared with its Python original
// line for line (examples/examples_test.cc); it is not part of mproc's API.
#ifndef MPROC_EXAMPLES_PY_H_
#define MPROC_EXAMPLES_PY_H_

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace py {

// bytes: Repr is b'...', as Python prints a bytes object.
struct Bytes {
  std::string data;
};

inline std::string Repr(std::string_view s) {
  const char q = (s.find('\'') != std::string_view::npos && s.find('"') == std::string_view::npos)
                     ? '"'
                     : '\'';
  std::string out(1, q);
  for (char c : s) {
    if (c == q || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + q;
}
inline std::string Repr(const std::string& s) { return Repr(std::string_view(s)); }
inline std::string Repr(const char* s) { return Repr(std::string_view(s)); }
inline std::string Repr(bool b) { return b ? "True" : "False"; }
inline std::string Repr(std::nullopt_t) { return "None"; }
inline std::string Repr(std::monostate) { return "None"; }
inline std::string Repr(const Bytes& b) { return "b" + Repr(std::string_view(b.data)); }

template <typename T>
  requires std::is_integral_v<T>
std::string Repr(T v) {
  return std::to_string(v);
}

// Python's float repr: the shortest string that reads back to the same double, with ".0" on
// integral values.
inline std::string Repr(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

template <typename T>
std::string Repr(const std::vector<T>& v);
template <typename K, typename V>
std::string Repr(const std::map<K, V>& m);
template <typename A, typename B>
std::string Repr(const std::pair<A, B>& p);
template <typename... T>
std::string Repr(const std::variant<T...>& v);

template <typename T>
std::string Repr(const std::vector<T>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ", ";
    out += Repr(v[i]);
  }
  return out + "]";
}

template <typename A, typename B>
std::string Repr(const std::pair<A, B>& p) {
  return "(" + Repr(p.first) + ", " + Repr(p.second) + ")";
}

// A dict's repr from its items, in their order (Python's dicts keep insertion order).
template <typename K, typename V>
std::string DictRepr(const std::vector<std::pair<K, V>>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += Repr(items[i].first) + ": " + Repr(items[i].second);
  }
  return out + "}";
}

template <typename K, typename V>
std::string Repr(const std::map<K, V>& m) {
  return DictRepr(std::vector<std::pair<K, V>>(m.begin(), m.end()));
}

template <typename... T>
std::string Repr(const std::variant<T...>& v) {
  return std::visit([](const auto& x) { return Repr(x); }, v);
}

// str(): strings as they are, everything else as its repr.
inline std::string Str(std::string_view s) { return std::string(s); }
inline std::string Str(const std::string& s) { return s; }
inline std::string Str(const char* s) { return s; }
template <typename T>
std::string Str(const T& v) {
  return Repr(v);
}

// print(args...): stdout through stdio, buffered as Python's is when stdout is not a terminal.
template <typename... T>
void Print(const T&... args) {
  std::string line;
  bool first = true;
  ((line += (first ? "" : " ") + Str(args), first = false), ...);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
}

}  // namespace py

#endif  // MPROC_EXAMPLES_PY_H_
