// Hybrid use: one MPI rank per node, each running a local process Pool over its node's cores.
//
//   mpirun --mca pml ob1 --map-by ppr:1:node --hostfile hosts ./hybrid 1000000
//   mpirun --mca pml ob1 -n 3 ./hybrid 1000000            # one machine, to try it
//
// Rank 0 cuts the work into one chunk per task and hands the chunks out with an
// MpiExecutor; each worker rank's initializer starts a Pool (spawn start method: no fork of
// an MPI process) once per executor, and each task maps its chunk over that Pool. Prints the
// sum of i*i for i < N, computed that way and directly, and "ok" when they agree.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <vector>

#include "mpi/executor.h"
#include "pool/pool.h"
#include "spawn/process.h"

namespace {

std::unique_ptr<mproc::Pool> g_node_pool;  // on a worker rank: its node's processes

int64_t Square(int64_t x) { return x * x; }

// The initializer, on each worker rank: a Pool of `processes` over this node.
void StartNodePool(int processes) {
  mproc::PoolOptions o;
  o.processes = processes;
  o.start_method = mproc::StartMethod::kSpawn;
  absl::StatusOr<std::unique_ptr<mproc::Pool>> pool = mproc::Pool::Create(o);
  if (!pool.ok()) throw std::runtime_error(std::string(pool.status().message()));
  g_node_pool = *std::move(pool);
}

// One task: the sum of squares of [begin, end), mapped over the node's Pool.
int64_t SumOfSquares(int64_t begin, int64_t end) {
  std::vector<int64_t> xs(static_cast<size_t>(end - begin));
  std::iota(xs.begin(), xs.end(), begin);
  absl::StatusOr<std::vector<int64_t>> squares = g_node_pool->Map(Square, xs);
  if (!squares.ok()) throw std::runtime_error(std::string(squares.status().message()));
  return std::accumulate(squares->begin(), squares->end(), int64_t{0});
}

}  // namespace

int main(int argc, char** argv) {
  mproc::Init(argc, argv);  // the node Pools' spawned workers run their target here
  if (absl::Status s = mproc::MpiInit(&argc, &argv); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 100000;
  absl::StatusOr<std::unique_ptr<mproc::MpiExecutor>> ex =
      mproc::MpiExecutor::Create({}, StartNodePool, 2);
  if (!ex.ok()) {
    std::fprintf(stderr, "%s\n", ex.status().ToString().c_str());
    return 1;
  }
  const int64_t chunk = std::max<int64_t>(1, n / (4 * (*ex)->max_workers()));
  std::vector<mproc::Future<int64_t>> parts;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    parts.push_back((*ex)->Submit(SumOfSquares, begin, std::min(n, begin + chunk)));
  }
  int64_t total = 0;
  for (auto& f : parts) {
    absl::StatusOr<int64_t> part = f.Result();
    if (!part.ok()) {
      std::fprintf(stderr, "%s\n", part.status().ToString().c_str());
      return 1;
    }
    total += *part;
  }
  int64_t direct = 0;
  for (int64_t i = 0; i < n; ++i) direct += i * i;
  std::printf("sum=%lld direct=%lld %s\n", static_cast<long long>(total),
              static_cast<long long>(direct), total == direct ? "ok" : "MISMATCH");
  return total == direct ? 0 : 1;
}
