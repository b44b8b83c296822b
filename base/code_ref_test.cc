#include "base/code_ref.h"

#include <dlfcn.h>

#include "absl/strings/match.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

int LocalFunction(int x) { return x * 3; }

TEST(CodeRefTest, RoundTripsAFunctionOfTheExecutable) {
  const void* addr = reinterpret_cast<const void*>(&LocalFunction);
  ASSERT_OK_AND_ASSIGN(CodeRef ref, CodeRefFor(addr));
  EXPECT_TRUE(absl::StartsWith(ref.object, "build-id:") || absl::StartsWith(ref.object, "path:"))
      << ref.object;
  ASSERT_OK_AND_ASSIGN(const void* back, ResolveCodeRef(ref));
  EXPECT_EQ(back, addr);
  auto* fn = reinterpret_cast<int (*)(int)>(const_cast<void*>(back));
  EXPECT_EQ(fn(5), 15);
}

TEST(CodeRefTest, RoundTripsAFunctionOfASharedLibrary) {
  const void* addr = reinterpret_cast<const void*>(&::dlsym);
  ASSERT_OK_AND_ASSIGN(CodeRef ref, CodeRefFor(addr));
  ASSERT_OK_AND_ASSIGN(CodeRef mine, CodeRefFor(reinterpret_cast<const void*>(&LocalFunction)));
  EXPECT_NE(ref.object, mine.object);
  ASSERT_OK_AND_ASSIGN(const void* back, ResolveCodeRef(ref));
  EXPECT_EQ(back, addr);
}

TEST(CodeRefTest, DataAndStrangersAreRejected) {
  static int data = 0;
  EXPECT_THAT(CodeRefFor(&data), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ResolveCodeRef({"build-id:00", 0}),
              StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("same binaries")));
  ASSERT_OK_AND_ASSIGN(CodeRef ref, CodeRefFor(reinterpret_cast<const void*>(&LocalFunction)));
  ref.offset = uint64_t{1} << 60;
  EXPECT_THAT(ResolveCodeRef(ref), StatusIs(absl::StatusCode::kNotFound));
}

// The main executable's name is the object of a function defined in it, and a shared
// library's functions name another object.
TEST(CodeRefTest, MainObjectIdNamesTheExecutable) {
  ASSERT_OK_AND_ASSIGN(CodeRef mine, CodeRefFor(reinterpret_cast<const void*>(&LocalFunction)));
  EXPECT_EQ(MainObjectId(), mine.object);
  ASSERT_OK_AND_ASSIGN(CodeRef lib, CodeRefFor(reinterpret_cast<const void*>(&::dlsym)));
  EXPECT_NE(MainObjectId(), lib.object);
}

// Answers are cached per thread, but never past a change in the loaded objects: a library that
// is unloaded stops resolving, both ways, right after.
TEST(CodeRefTest, CachedAnswersEndWhenALibraryIsUnloaded) {
  if (::dlopen("libz.so.1", RTLD_NOW | RTLD_NOLOAD) != nullptr) {
    GTEST_SKIP() << "libz is already loaded here: it cannot be unloaded";
  }
  void* lib = ::dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) GTEST_SKIP() << "libz.so.1 is not installed";
  const void* addr = ::dlsym(lib, "zlibVersion");
  ASSERT_NE(addr, nullptr);
  ASSERT_OK_AND_ASSIGN(CodeRef ref, CodeRefFor(addr));
  ASSERT_OK_AND_ASSIGN(CodeRef again, CodeRefFor(addr));  // from the cache
  EXPECT_EQ(again.object, ref.object);
  EXPECT_EQ(again.offset, ref.offset);
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(const void* back, ResolveCodeRef(ref));
    EXPECT_EQ(back, addr);
  }
  ASSERT_EQ(::dlclose(lib), 0);
  if (::dlopen("libz.so.1", RTLD_NOW | RTLD_NOLOAD) != nullptr) {
    GTEST_SKIP() << "libz stayed loaded after dlclose";
  }
  EXPECT_THAT(ResolveCodeRef(ref), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(CodeRefFor(addr), StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace mproc
