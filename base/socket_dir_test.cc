#include "base/socket_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

TEST(SocketDirTest, NameSaysKindAndOwnerAndParsesBack) {
  ASSERT_OK_AND_ASSIGN(std::string dir, MakeSocketDir("manager"));
  struct stat st;
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(dir.rfind(SocketDirBase() + "/mproc-manager-", 0), 0u) << dir;
  std::optional<SocketDirName> parsed = ParseSocketDirName(dir);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->kind, "manager");
  EXPECT_EQ(parsed->owner, ::getpid());
  // The socket path fits a sockaddr_un with room to spare.
  EXPECT_LT((dir + "/socket").size(), 108u);
  ::rmdir(dir.c_str());
}

TEST(SocketDirTest, OtherNamesAreNotSocketDirs) {
  EXPECT_FALSE(ParseSocketDirName("mproc-manager-XXXXXX").has_value());  // no pid
  EXPECT_FALSE(ParseSocketDirName("mproc-manager-12-abc").has_value());  // suffix not 6 long
  EXPECT_FALSE(ParseSocketDirName("mproc-manager-0-abcdef").has_value());
  EXPECT_FALSE(ParseSocketDirName("other-manager-12-abcdef").has_value());
  EXPECT_FALSE(ParseSocketDirName("mproc--12-abcdef").has_value());
  std::optional<SocketDirName> fs = ParseSocketDirName("/tmp/mproc-forkserver-4194304-a1B2c3");
  ASSERT_TRUE(fs.has_value());
  EXPECT_EQ(fs->kind, "forkserver");
  EXPECT_EQ(fs->owner, 4194304);
}

TEST(SocketDirTest, LongTmpdirFallsBackToTmp) {
  const char* saved = std::getenv("TMPDIR");
  std::string keep = saved ? saved : "";
  ::setenv("TMPDIR", ("/" + std::string(80, 'x')).c_str(), 1);
  EXPECT_EQ(SocketDirBase(), "/tmp");
  ::setenv("TMPDIR", "relative/dir", 1);
  EXPECT_EQ(SocketDirBase(), "/tmp");
  ::setenv("TMPDIR", "/var/tmp", 1);
  EXPECT_EQ(SocketDirBase(), "/var/tmp");
  if (saved) ::setenv("TMPDIR", keep.c_str(), 1); else ::unsetenv("TMPDIR");
}

}  // namespace
}  // namespace mproc
