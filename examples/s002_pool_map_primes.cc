// Seed 002, "Pool.map (Blocking Batch Processing)": naive primality tests, in parallel.
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

bool IsPrime(int64_t n) {
  // Check if n is prime (naive method).
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  const int64_t r = static_cast<int64_t>(std::sqrt(static_cast<double>(n)));  // isqrt
  for (int64_t f = 3; f <= r; f += 2) {
    if (n % f == 0) return false;
  }
  return true;
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  std::vector<int64_t> numbers = {10'000'019, 10'000'079, 10'000'091, 10'000'099};
  auto pool = mproc::Pool::Create({.processes = mproc::CpuCount()}).value();
  absl::Time start = absl::Now();
  std::vector<bool> results = pool->Map(IsPrime, numbers).value();  // waits for all results
  absl::Time finish = absl::Now();
  double total = absl::ToDoubleSeconds(finish - start);
  std::vector<std::pair<int64_t, bool>> zipped;
  for (size_t i = 0; i < numbers.size(); ++i) zipped.emplace_back(numbers[i], results[i]);
  py::Print(zipped);
  py::Print(absl::StrFormat("Time elapsed: %.2fs with %d workers", total, mproc::CpuCount()));
}
