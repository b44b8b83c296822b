// A realistic job: every .py file of a directory hashed and word-counted by a Pool, the
// results passed on a Queue to a reporter process, a shared counter of files done, per-file
// statistics written into SharedMemory by the workers, and a progress bar on stderr (drawn only
// when stderr is a terminal). Its Python original is wordcount_job.py; examples_test runs both
// on this directory.
//
//   bazel run //examples:wordcount_job -- DIRECTORY
#include <openssl/evp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ipc/queue.h"
#include "pool/pool.h"
#include "pool/progress.h"
#include "shm/shared_memory.h"
#include "spawn/process.h"
#include "sync/lock.h"
#include "sync/value.h"

struct Stat {  // one file's line, word and byte counts, at its index in the segment
  int64_t lines, words, bytes;
};

using Counts = std::map<std::string, int64_t>;
using FileResult = std::tuple<std::string, std::string, Counts>;  // name, sha256, word counts
using Row = std::optional<std::tuple<std::string, std::string, int64_t>>;  // nullopt: the end

// Each worker's own handles, set by its initializer.
mproc::Value<int64_t> g_counter;
mproc::SharedMemory g_shm;

void InitWorker(mproc::Value<int64_t> counter, std::string shm_name) {
  g_counter = counter;
  g_shm = mproc::SharedMemory::Attach(shm_name).value();
}

std::string Sha256Hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < n; ++i) hex += absl::StrFormat("%02x", md[i]);
  return hex;
}

FileResult CountFile(std::pair<int64_t, std::string> job) {
  const auto& [index, path] = job;
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string data = ss.str();
  Counts counts;
  Stat stat{0, 0, static_cast<int64_t>(data.size())};
  std::string word;
  for (size_t i = 0; i <= data.size(); ++i) {  // words: runs of ASCII letters, lowercased
    const char c = i < data.size() ? data[i] : '\0';
    if (c == '\n') ++stat.lines;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      word += static_cast<char>(c | 0x20);
    } else if (!word.empty()) {
      ++counts[word];
      ++stat.words;
      word.clear();
    }
  }
  std::memcpy(static_cast<char*>(g_shm.data()) + index * sizeof(Stat), &stat, sizeof stat);
  {
    mproc::LockGuard g(g_counter.GetLock());
    g_counter.Set(g_counter.Get() + 1);
  }
  return {std::filesystem::path(path).filename().string(), Sha256Hex(data), std::move(counts)};
}

void Reporter(mproc::Queue<Row> q) {
  std::vector<std::tuple<std::string, std::string, int64_t>> rows;
  while (true) {
    absl::StatusOr<Row> item = q.Get();
    if (!item.ok() || !item->has_value()) break;
    rows.push_back(**item);
  }
  std::sort(rows.begin(), rows.end());
  for (const auto& [name, digest, words] : rows) {
    std::printf("%s  %6lld  %s\n", digest.substr(0, 16).c_str(), static_cast<long long>(words),
                name.c_str());
  }
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIRECTORY\n", argv[0]);
    return 2;
  }
  std::vector<std::pair<int64_t, std::string>> jobs;
  std::vector<std::string> paths;
  for (const auto& e : std::filesystem::directory_iterator(argv[1])) {
    if (e.path().extension() == ".py") paths.push_back(e.path().string());
  }
  std::sort(paths.begin(), paths.end());
  for (size_t i = 0; i < paths.size(); ++i) jobs.emplace_back(i, paths[i]);

  auto counter = mproc::Value<int64_t>::Create(0).value();
  auto shm = mproc::SharedMemory::Create(std::max<size_t>(1, paths.size()) * sizeof(Stat)).value();
  auto q = mproc::Queue<Row>::Create().value();
  mproc::Process rep(Reporter, q);
  if (!rep.Start().ok()) return 1;

  Counts total;
  {
    auto pool = mproc::Pool::Create({.processes = 4}, InitWorker, counter, shm.name()).value();
    auto it = pool->IMapUnordered(CountFile, jobs, /*chunksize=*/1, mproc::ProgressBar("files"));
    while (auto r = it.Next()) {
      auto [name, digest, counts] = r->value();
      int64_t words = 0;
      for (const auto& [w, n] : counts) {
        total[w] += n;
        words += n;
      }
      (void)q.Put(std::make_tuple(name, digest, words));
    }
  }
  (void)q.Put(std::nullopt);
  (void)rep.Join();

  Stat sum{0, 0, 0};
  for (size_t i = 0; i < paths.size(); ++i) {
    Stat s;
    std::memcpy(&s, static_cast<const char*>(shm.data()) + i * sizeof(Stat), sizeof s);
    sum.lines += s.lines;
    sum.words += s.words;
    sum.bytes += s.bytes;
  }
  shm.Close();
  (void)shm.Unlink();
  std::printf("files: %lld  lines: %lld  words: %lld  bytes: %lld\n",
              static_cast<long long>(counter.Get()), static_cast<long long>(sum.lines),
              static_cast<long long>(sum.words), static_cast<long long>(sum.bytes));
  std::vector<std::pair<std::string, int64_t>> top(total.begin(), total.end());
  std::sort(top.begin(), top.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  if (top.size() > 10) top.resize(10);
  std::vector<std::string> parts;
  for (const auto& [w, n] : top) parts.push_back(absl::StrFormat("%s=%d", w, n));
  std::printf("top words: %s\n", absl::StrJoin(parts, ", ").c_str());
}
