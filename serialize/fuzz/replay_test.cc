// Replays a fuzzer's seed corpus (serialize/fuzz/corpus/<fuzzer>/) through its
// LLVMFuzzerTestOneInput under g++, so `bazel test //...` exercises every seed.
#include <dirent.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

TEST(FuzzCorpusTest, EverySeedRuns) {
  const char* dir = std::getenv("FUZZ_CORPUS");
  ASSERT_NE(dir, nullptr);
  DIR* d = ::opendir(dir);
  ASSERT_NE(d, nullptr) << dir;
  std::vector<std::string> files;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') files.push_back(std::string(dir) + "/" + e->d_name);
  }
  ::closedir(d);
  ASSERT_GE(files.size(), 3u) << "the seed corpus is missing";
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string bytes = ss.str();
    EXPECT_EQ(LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), 0) << f;
  }
}
