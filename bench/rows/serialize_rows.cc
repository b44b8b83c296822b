// serialize/: encode + decode round trips against pickle.dumps+loads of the same values
// (CPython peer), a hand-written codec for the nested map, and memcpy of the same bytes.
// Every row reuses its EncodeBuffer (as a Queue or Connection does); the title says whether
// the decode reuses its destination.

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "bench/report/report.h"
#include "serialize/codec.h"

namespace mproc::bench {
namespace {

template <typename T>
void RoundTrip(benchmark::State& state, const T& value, bool reuse_destination) {
  EncodeBuffer buf;
  T reused{};
  for (auto _ : state) {
    buf.Clear();
    Encode(value, buf);
    if (reuse_destination) {
      if (!DecodeInto(buf.bytes(), reused).ok()) state.SkipWithError("decode failed");
      benchmark::DoNotOptimize(reused);
    } else {
      absl::StatusOr<T> out = Decode<T>(buf.bytes());
      if (!out.ok()) state.SkipWithError("decode failed");
      benchmark::DoNotOptimize(out);
    }
  }
}

using DictOfLists = std::map<std::string, std::vector<int32_t>>;

DictOfLists MakeDict() {
  DictOfLists d;
  for (int i = 0; i < 16; ++i) {
    std::vector<int32_t> v(16);
    for (int j = 0; j < 16; ++j) v[static_cast<size_t>(j)] = j;
    d["k" + std::to_string(i)] = v;
  }
  return d;
}

// The same wire format written by hand for exactly this type: what a careful engineer would
// write without a codec library. The generic codec's target is within 1.5x of it.
void HandEncode(std::string& out, const DictOfLists& d) {
  auto put_len = [&](uint64_t v) {
    while (v >= 0x80) {
      out.push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    out.push_back(static_cast<char>(v));
  };
  put_len(d.size());
  for (const auto& [k, v] : d) {
    put_len(k.size());
    out.append(k);
    put_len(v.size());
    size_t pad = (4 - (out.size() & 3)) & 3;
    out.append(pad, '\0');
    out.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  }
}

bool HandDecode(std::string_view in, DictOfLists& d) {
  size_t pos = 0;
  auto get_len = [&](uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64 && pos < in.size(); shift += 7) {
      uint8_t b = static_cast<uint8_t>(in[pos++]);
      *v |= uint64_t{b & 0x7fu} << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  };
  uint64_t n;
  if (!get_len(&n)) return false;
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t kl, vl;
    if (!get_len(&kl) || kl > in.size() - pos) return false;
    std::string k(in.substr(pos, kl));
    pos += kl;
    if (!get_len(&vl)) return false;
    pos += (4 - (pos & 3)) & 3;
    if (vl > (in.size() - pos) / 4) return false;
    std::vector<int32_t> v(vl);
    std::memcpy(v.data(), in.data() + pos, vl * 4);
    pos += vl * 4;
    d.emplace(std::move(k), std::move(v));
  }
  return pos == in.size();
}

void HandWrittenDict(benchmark::State& state) {
  DictOfLists d = MakeDict();
  std::string buf;
  for (auto _ : state) {
    buf.clear();
    HandEncode(buf, d);
    DictOfLists out;
    if (!HandDecode(buf, out)) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(out);
  }
}

void Bytes1MiBCopy(benchmark::State& state) {
  std::vector<uint8_t> data(1 << 20, 7);
  RoundTrip(state, data, /*reuse_destination=*/true);
}

void Bytes1MiBView(benchmark::State& state) {
  std::vector<uint8_t> data(1 << 20, 7);
  EncodeBuffer buf;
  for (auto _ : state) {
    buf.Clear();
    Encode(std::span<const uint8_t>(data), buf);
    absl::StatusOr<std::span<const uint8_t>> view = Decode<std::span<const uint8_t>>(buf.bytes());
    if (!view.ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(view);
  }
}

}  // namespace

MPROC_REPORT_ROWS(SerializeRows) {
  AddRow("mproc.serialize.int", Section::kMproc,
         [](benchmark::State& s) { RoundTrip(s, int64_t{12345}, false); })
      .Title("encode+decode an int (fresh destination)")
      .Baselines({"cpython.pickle.int"});
  AddRow("mproc.serialize.str64", Section::kMproc,
         [](benchmark::State& s) { RoundTrip(s, std::string(64, 's'), false); })
      .Title("encode+decode a 64 B string into a fresh string")
      .Baselines({"cpython.pickle.str64"});
  AddRow("mproc.serialize.floats1k", Section::kMproc,
         [](benchmark::State& s) { RoundTrip(s, std::vector<double>(128, 1.5), false); })
      .Title("encode+decode 128 doubles (1 KiB) into a fresh vector")
      .Baselines({"cpython.pickle.floats1k"});
  AddRow("mproc.serialize.dict_of_lists", Section::kMproc,
         [](benchmark::State& s) { RoundTrip(s, MakeDict(), false); })
      .Title("encode+decode map<string, vector<int>> 16x16 into a fresh map")
      .Baselines({"handwritten.dict_of_lists", "cpython.pickle.dict_of_lists"});
  AddRow("handwritten.dict_of_lists", Section::kPeer, HandWrittenDict)
      .Title("hand-written codec for map<string, vector<int>> 16x16 (same wire format)");
  AddRow("mproc.serialize.bytes1m_copy", Section::kMproc, Bytes1MiBCopy)
      .Title("encode+decode 1 MiB of bytes, copying, buffer and destination reused")
      .BytesPerOp(1 << 20)
      .Baselines({"kernel.memcpy_1MiB", "cpython.pickle.bytes1m"});
  AddRow("mproc.serialize.bytes1m_view", Section::kMproc, Bytes1MiBView)
      .Title("encode 1 MiB + zero-copy span decode, buffer reused")
      .BytesPerOp(1 << 20)
      .Baselines({"kernel.memcpy_1MiB", "cpython.pickle.bytes1m"});
}

}  // namespace mproc::bench
