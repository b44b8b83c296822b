// base/status_matchers.h — gtest/gmock matchers for absl::Status and absl::StatusOr<T>.
//
//   EXPECT_THAT(DoThing(), IsOk());
//   EXPECT_THAT(Parse(bytes), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("magic")));
//   EXPECT_THAT(Compute(), IsOkAndHolds(42));
//   ASSERT_OK_AND_ASSIGN(UniqueFd fd, OpenThing());
//
// Abseil 20220623 (Debian 12) ships none of these.

#ifndef MPROC_BASE_STATUS_MATCHERS_H_
#define MPROC_BASE_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace testing_internal {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER(IsOkMatcher, "is OK") {
  const absl::Status& s = GetStatus(arg);
  if (!s.ok()) *result_listener << "status is " << s;
  return s.ok();
}

template <typename MsgMatcher>
class StatusIsMatcherImpl {
 public:
  StatusIsMatcherImpl(absl::StatusCode code, MsgMatcher msg) : code_(code), msg_(std::move(msg)) {}

  template <typename S>
  bool MatchAndExplain(const S& arg, ::testing::MatchResultListener* l) const {
    const absl::Status& s = GetStatus(arg);
    *l << "status is " << s;
    if (s.code() != code_) return false;
    return ::testing::SafeMatcherCast<const std::string&>(msg_).MatchAndExplain(
        std::string(s.message()), l);
  }
  void DescribeTo(std::ostream* os) const {
    *os << "has code " << absl::StatusCodeToString(code_) << " and a message that ";
    ::testing::SafeMatcherCast<const std::string&>(msg_).DescribeTo(os);
  }
  void DescribeNegationTo(std::ostream* os) const {
    *os << "does not have code " << absl::StatusCodeToString(code_) << " or a message that ";
    ::testing::SafeMatcherCast<const std::string&>(msg_).DescribeTo(os);
  }

 private:
  absl::StatusCode code_;
  MsgMatcher msg_;
};

template <typename InnerMatcher>
class IsOkAndHoldsMatcherImpl {
 public:
  explicit IsOkAndHoldsMatcherImpl(InnerMatcher m) : m_(std::move(m)) {}

  template <typename T>
  bool MatchAndExplain(const absl::StatusOr<T>& arg, ::testing::MatchResultListener* l) const {
    if (!arg.ok()) {
      *l << "status is " << arg.status();
      return false;
    }
    return ::testing::SafeMatcherCast<const T&>(m_).MatchAndExplain(*arg, l);
  }
  void DescribeTo(std::ostream* os) const { *os << "is OK and holds a value"; }
  void DescribeNegationTo(std::ostream* os) const { *os << "is not OK or holds another value"; }

 private:
  InnerMatcher m_;
};

}  // namespace testing_internal

// Matches an OK Status or StatusOr.
inline auto IsOk() { return testing_internal::IsOkMatcher(); }

// Matches a Status/StatusOr with `code` (and a message matching `msg`).
template <typename MsgMatcher>
auto StatusIs(absl::StatusCode code, MsgMatcher msg) {
  return ::testing::MakePolymorphicMatcher(
      testing_internal::StatusIsMatcherImpl<MsgMatcher>(code, std::move(msg)));
}
inline auto StatusIs(absl::StatusCode code) { return StatusIs(code, ::testing::_); }

// Matches an OK StatusOr<T> whose value matches `m`.
template <typename InnerMatcher>
auto IsOkAndHolds(InnerMatcher m) {
  return ::testing::MakePolymorphicMatcher(
      testing_internal::IsOkAndHoldsMatcherImpl<InnerMatcher>(std::move(m)));
}

}  // namespace mproc

#define MPROC_EXPECT_OK(expr) EXPECT_THAT((expr), ::mproc::IsOk())
#define MPROC_ASSERT_OK(expr) ASSERT_THAT((expr), ::mproc::IsOk())

// ASSERT_OK_AND_ASSIGN(lhs, expr): asserts `expr` (a StatusOr) is OK, then moves its value
// into `lhs`, which may declare a variable.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  MPROC_ASSERT_OK_AND_ASSIGN_IMPL_(MPROC_STATUS_CONCAT_(mproc_sor_, __LINE__), lhs, expr)
#define MPROC_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                     \
  ASSERT_TRUE(tmp.ok()) << "status is " << tmp.status(); \
  lhs = std::move(tmp).value()

#endif  // MPROC_BASE_STATUS_MATCHERS_H_
