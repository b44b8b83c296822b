// The MPI rows of the benchmark report (bench/report/mpi_peer.cc runs this under
// `mpirun -n 3 --mca pml ob1`): a raw MPI ping-pong between ranks 0 and 1 carrying the bytes a
// Submit of Square(int) carries, then MpiExecutor's Submit -> Result and Map on rank 0 with
// ranks 1 and 2 serving. Prints JSON lines as bench/peers/cpython_mp.py does: a header, then
// {"row": id, "samples": [ns per op, one per repetition], "note": ...}.
//
//   mpirun --mca pml ob1 -n 3 mpi_rows [--quick]
#include <mpi.h>
#include <sys/resource.h>
#include <time.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "mpi/executor.h"
#include "pool/internal/task_protocol.h"

namespace {

int Square(int x) { return x * x; }

double NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

double CpuNs() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
          static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3);
}

void Emit(const std::string& row, const std::vector<double>& samples, const std::string& note) {
  std::printf(
      "{\"row\": \"%s\", \"samples\": [%s], \"note\": \"%s\"}\n", row.c_str(),
      absl::StrJoin(samples, ", ",
                    [](std::string* out, double v) { absl::StrAppendFormat(out, "%.1f", v); })
          .c_str(),
      note.c_str());
  std::fflush(stdout);
}

// The sizes of the messages a Submit(Square, 3) and its answer are on the wire.
std::pair<size_t, size_t> SubmitMessageSizes() {
  using Traits = mproc::pool_internal::TaskTraits<int (*)(int)>;
  mproc::EncodeBuffer task = mproc::pool_internal::EncodeCall<Traits>(&Square, Traits::Params(3));
  mproc::EncodeBuffer id;
  mproc::Encode(uint64_t{1}, id);
  mproc::EncodeBuffer answer;
  mproc::Encode(uint64_t{1}, answer);
  answer.PutVarint(1);
  answer.Append(&mproc::pool_internal::kItemOk, 1);
  mproc::Encode(9, answer);
  return {id.size() + task.size(), answer.size()};
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int reps = quick ? 3 : 5;
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) return 2;
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size < 3) {
    if (rank == 0) std::fprintf(stderr, "mpi_rows: run it on 3 ranks\n");
    MPI_Finalize();
    return 2;
  }

  // 1. The floor: a blocking ping-pong of the same bytes between ranks 0 and 1 (both sides
  // poll, as Open MPI's blocking calls do, and as the executor's engine thread does).
  const auto [ask, answer] = SubmitMessageSizes();
  {
    const int n = quick ? 2000 : 20000;
    std::vector<char> a(ask), b(answer);
    std::vector<double> samples;
    for (int rep = 0; rep < reps + 1; ++rep) {
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = NowNs();
      for (int i = 0; i < n; ++i) {
        if (rank == 0) {
          MPI_Send(a.data(), static_cast<int>(ask), MPI_BYTE, 1, 1, MPI_COMM_WORLD);
          MPI_Recv(b.data(), static_cast<int>(answer), MPI_BYTE, 1, 2, MPI_COMM_WORLD,
                   MPI_STATUS_IGNORE);
        } else if (rank == 1) {
          MPI_Recv(a.data(), static_cast<int>(ask), MPI_BYTE, 0, 1, MPI_COMM_WORLD,
                   MPI_STATUS_IGNORE);
          MPI_Send(b.data(), static_cast<int>(answer), MPI_BYTE, 0, 2, MPI_COMM_WORLD);
        }
      }
      if (rep > 0) samples.push_back((NowNs() - t0) / n);  // the first is a warm-up
    }
    if (rank == 0) {
      const char* v = "";
      char lib[MPI_MAX_LIBRARY_VERSION_STRING];
      int len = 0;
      if (MPI_Get_library_version(lib, &len) == MPI_SUCCESS) {
        lib[len] = '\0';
        if (char* nl = std::strchr(lib, ','); nl != nullptr) *nl = '\0';
        v = lib;
      }
      std::printf("{\"version\": \"%s, 3 ranks, pml ob1\"}\n", v);
      Emit("kernel.mpi.pingpong", samples,
           absl::StrFormat("MPI_Send/MPI_Recv, %zu B there and %zu B back (a Submit's bytes); "
                           "%d round trips per repetition",
                           ask, answer, n));
    }
  }

  // 2. The executor: ranks 1 and 2 serve inside MpiInit.
  if (absl::Status s = mproc::MpiInit(&argc, &argv); !s.ok()) {
    std::fprintf(stderr, "mpi_rows: %s\n", s.ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<mproc::MpiExecutor>> ex = mproc::MpiExecutor::Create();
  if (!ex.ok()) {
    std::fprintf(stderr, "mpi_rows: %s\n", ex.status().ToString().c_str());
    return 1;
  }
  {
    const int n = quick ? 300 : 3000;
    for (int i = 0; i < 100; ++i) (void)(*ex)->Submit(Square, 3).Result();
    std::vector<double> samples;
    double cpu = 0;
    for (int rep = 0; rep < reps; ++rep) {
      const double c0 = CpuNs();
      const double t0 = NowNs();
      for (int i = 0; i < n; ++i) {
        if (!(*ex)->Submit(Square, 3).Result().ok()) return 1;
      }
      samples.push_back((NowNs() - t0) / n);
      cpu += (CpuNs() - c0) / n;
    }
    Emit("mproc.mpi.submit", samples,
         absl::StrFormat("Submit(Square, 3).Result(), one at a time, %d per repetition; the "
                         "client process burns %.1f us CPU per call (its engine thread polls "
                         "MPI while an answer is due)",
                         n, cpu / reps / 1e3));
  }
  for (const auto& [chunk, items, qitems] :
       {std::tuple<size_t, int, int>{1, 30000, 5000}, {100, 100000, 20000}}) {
    const int n = quick ? qitems : items;
    std::vector<int> in(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) in[static_cast<size_t>(i)] = i;
    std::vector<double> samples;
    for (int rep = 0; rep < reps; ++rep) {
      const double t0 = NowNs();
      auto r = (*ex)->Map(Square, in, chunk);
      if (!r.ok() || r->size() != in.size() || !r->back().ok()) return 1;
      samples.push_back((NowNs() - t0) / n);
    }
    Emit(absl::StrCat("mproc.mpi.map_chunk", chunk), samples,
         absl::StrFormat("Map(Square) over %d ints, chunksize %zu, 2 worker ranks; per item", n,
                         chunk));
  }
  ex->reset();
  MPI_Finalize();  // this program initialized MPI: it finalizes it (which releases the workers)
  return 0;
}
