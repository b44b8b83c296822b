// Checks the protoc code generation macro: a generated message round-trips through
// Debian's libprotobuf.
#include "gtest/gtest.h"
#include "third_party/protobuf/codegen_test.pb.h"

TEST(ProtobufCodegenTest, GeneratedMessageRoundTrips) {
  mproc::third_party_test::Probe p;
  p.set_id(-42);
  p.set_name("mproc");
  p.add_chunks(std::string("\0\1\2", 3));
  std::string wire;
  ASSERT_TRUE(p.SerializeToString(&wire));
  mproc::third_party_test::Probe q;
  ASSERT_TRUE(q.ParseFromString(wire));
  EXPECT_EQ(q.id(), -42);
  EXPECT_EQ(q.name(), "mproc");
  ASSERT_EQ(q.chunks_size(), 1);
  EXPECT_EQ(q.chunks(0), std::string("\0\1\2", 3));
  EXPECT_FALSE(q.ParseFromString(std::string("\xff\xff\xff", 3)));
}
