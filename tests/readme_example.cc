// README.md's Process, Pool, Queue and Manager examples, in substance: a test that they build
// and work.
#include "ipc/queue.h"
#include "manager/manager.h"
#include "pool/pool.h"
#include "pool/progress.h"
#include "spawn/process.h"
#include "sync/lock.h"
#include "sync/value.h"

int Work(mproc::Lock lock, mproc::Value<int64_t> total, int n) {  // a free function
  for (int i = 0; i < n; ++i) {
    mproc::LockGuard g(lock);
    total.Set(total.Get() + 1);
  }
  return 0;  // the exit code
}

int Square(int x) { return x * x; }

int Visit(mproc::DictProxy<std::string, int> visits, mproc::ListProxy<int> log, int id) {
  (void)visits.Set("child-" + std::to_string(id), id);
  if (!visits.Update("total", [](int& n) { return ++n; }).ok()) return 1;
  return log.Append(id).ok() ? 0 : 1;
}

struct Job {
  int32_t id;
  std::string name;
};
MPROC_CODEC_FIELDS(Job, id, name)

int main(int argc, char** argv) {
  mproc::Init(argc, argv);  // first line: spawned / fork-server children run their target here
  auto lock = mproc::Lock::Create().value();
  auto total = mproc::Value<int64_t>::Create(0).value();
  for (auto method : {mproc::StartMethod::kForkServer, mproc::StartMethod::kSpawn,
                      mproc::StartMethod::kFork}) {
    total.Set(0);
    mproc::Process p(Work, lock, total, 1000);
    p.SetStartMethod(method);
    if (!p.Start().ok() || !p.Join().ok()) return 1;
    if (p.exitcode() != 0 || total.Get() != 1000) return 2;
  }

  auto pool = mproc::Pool::Create({.processes = 4}).value();
  std::vector<int> inputs = {1, 2, 3};
  std::vector<int> squares = pool->Map(Square, inputs).value();
  if (!pool->Map(Square, inputs, /*chunksize=*/0, mproc::ProgressBar("squares")).ok()) return 6;
  mproc::AsyncResult<int> r = pool->ApplyAsync(Square, 7);
  if (squares != std::vector<int>{1, 4, 9} || r.Get(absl::Seconds(30)).value() != 49) return 3;

  auto q = mproc::Queue<Job>::Create(/*maxsize=*/100).value();
  if (!q.Put(Job{1, "x"}).ok()) return 4;
  Job j = q.Get(absl::Seconds(1)).value();
  if (j.id != 1 || j.name != "x") return 5;

  auto m = mproc::Manager::Start().value();
  auto visits = m->Dict<std::string, int>().value();
  auto log = m->List<int>().value();
  if (!visits.Set("total", 0).ok()) return 7;
  mproc::Process v(Visit, visits, log, 7);
  if (!v.Start().ok() || !v.Join().ok() || v.exitcode() != 0) return 7;
  if (visits.Get("child-7").value() != 7 || log.ToVector().value() != std::vector<int>{7}) return 8;
  if (visits.Get("total").value() != 1) return 8;
  return m->Shutdown().ok() ? 0 : 9;
}
