#include "base/thread_scratch.h"

#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace mproc {
namespace {

struct TagA;
struct TagB;

TEST(ThreadScratchTest, OnePerThreadAndTag) {
  std::string& a = ThreadScratch<std::string, TagA>();
  a = "main";
  std::string* again = &ThreadScratch<std::string, TagA>();
  std::string* other_tag = &ThreadScratch<std::string, TagB>();
  EXPECT_EQ(again, &a);
  EXPECT_NE(other_tag, &a);
  std::string* other = nullptr;
  std::thread t([&] {
    other = &ThreadScratch<std::string, TagA>();
    EXPECT_EQ(*other, "");  // a fresh one, not main's
  });
  t.join();
  EXPECT_NE(other, &a);
  EXPECT_EQ(a, "main");
}

// What runs after a thread's thread_locals were destroyed (as exit handlers run after the
// exiting thread's) gets a working T of its own, not the destroyed one.
struct UsesScratchWhenDestroyed {
  int touched = 0;
  ~UsesScratchWhenDestroyed();
};

std::string* g_after = nullptr;
std::string g_after_value;

UsesScratchWhenDestroyed::~UsesScratchWhenDestroyed() {
  std::string& s = ThreadScratch<std::string, TagA>();
  s.append(500, 'z');  // writes into memory a destroyed string would have freed
  g_after = &s;
  g_after_value = s;
}

TEST(ThreadScratchTest, AfterTheThreadsThreadLocalsAreDestroyedAFreshOneIsGiven) {
  std::string* during = nullptr;
  std::thread t([&] {
    // Constructed first, so destroyed after the scratch's owner (reverse order).
    thread_local UsesScratchWhenDestroyed user;
    during = &ThreadScratch<std::string, TagA>();
    during->assign(100, 'a');
    user.touched = 1;
  });
  t.join();
  ASSERT_NE(g_after, nullptr);
  EXPECT_NE(g_after, during);
  EXPECT_EQ(g_after_value, std::string(500, 'z'));
}

}  // namespace
}  // namespace mproc
