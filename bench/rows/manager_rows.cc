// The Manager (manager/): a Dict call from a client process to the server, and making a Dict,
// against a raw AF_UNIX request/reply of the same size and CPython's Manager().dict(); and 64
// client processes hammering one server, against raw echo servers over the same sockets.
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/syscall.h"
#include "base/unique_fd.h"

#include "bench/report/report.h"
#include "bench/rows/two_process.h"
#include "manager/manager.h"

namespace mproc::bench {
namespace {

// Pins another process (the manager's server) to `cpu`.
void PinOther(pid_t pid, int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  (void)::sched_setaffinity(pid, sizeof(set), &set);
}

// d.Set(i % 16, i) from this process, served by the manager's process: one request, one reply.
ManagerOptions WithBackend(ManagerOptions::Backend b) {
  ManagerOptions o;
  o.backend = b;
  return o;
}

void ManagerDictSet(benchmark::State& state, PinCpus cpus,
                    ManagerOptions::Backend backend = ManagerOptions::Backend::kAuto) {
  ScopedPin pin(cpus.parent);
  absl::StatusOr<std::unique_ptr<Manager>> m = Manager::Start(WithBackend(backend));
  if (!m.ok()) return state.SkipWithError("Manager::Start failed");
  PinOther((*m)->pid(), cpus.child);
  absl::StatusOr<DictProxy<int64_t, int64_t>> d = (*m)->Dict<int64_t, int64_t>();
  if (!d.ok() || !d->Set(0, 0).ok()) return state.SkipWithError("Dict failed");
  int64_t i = 0;
  CpuMeter cpu({(*m)->pid()});
  for (auto _ : state) {
    if (!d->Set(i % 16, i).ok()) return state.SkipWithError("Set failed");
    ++i;
  }
  cpu.Stop(state);
  (void)(*m)->Shutdown();
}

// Making a Dict proxy and dropping it (the drop is a one-way message): CPython's costs about
// a hundred ops (a new connection and handshake per create, incref and decref). Pinned as
// dict_set is, so each is compared with the op placed the same way.
void ManagerDictCreate(benchmark::State& state, PinCpus cpus) {
  ScopedPin pin(cpus.parent);
  absl::StatusOr<std::unique_ptr<Manager>> m = Manager::Start();
  if (!m.ok()) return state.SkipWithError("Manager::Start failed");
  PinOther((*m)->pid(), cpus.child);
  if (!(*m)->Dict<int64_t, int64_t>().ok()) return state.SkipWithError("Dict failed");
  CpuMeter cpu({(*m)->pid()});
  for (auto _ : state) {
    absl::StatusOr<DictProxy<int64_t, int64_t>> d = (*m)->Dict<int64_t, int64_t>();
    if (!d.ok()) return state.SkipWithError("Dict failed");
    benchmark::DoNotOptimize(d);
  }
  cpu.Stop(state);
  (void)(*m)->Shutdown();
}

// ---- many clients, one server

constexpr int kCrowd = 64;
constexpr size_t kRequest = 48, kReply = 16;  // the sizes of kernel.unix_reqrep_48B

int OpsPerClient() { return QuickMode() ? 20 : 100; }

// `kCrowd` forked client processes; one benchmark iteration is one round: every client does
// OpsPerClient() operations (op(), in the child), started together by one byte each on a
// shared "go" pipe and counted back on a "done" pipe. The figure is wall time per operation,
// all clients together (the inverse of the aggregate rate). `ready` runs in each child before
// its first round (connecting).
void Crowd(benchmark::State& state, const std::function<bool()>& ready,
           const std::function<bool()>& op, std::vector<pid_t> servers) {
  int go[2], done[2];
  if (::pipe2(go, O_CLOEXEC) != 0 || ::pipe2(done, O_CLOEXEC) != 0) {
    return SkipRow(state, "pipe2 failed");
  }
  const int ops = OpsPerClient();
  std::vector<pid_t> kids;
  for (int i = 0; i < kCrowd; ++i) {
    kids.push_back(ForkPinnedChild(-1, [&] {
      ::close(go[1]);
      ::close(done[0]);
      if (!ready()) return 2;
      char b = 0;
      if (::write(done[1], &b, 1) != 1) return 3;  // connected
      while (RetryEintr([&] { return ::read(go[0], &b, 1); }) == 1) {
        for (int k = 0; k < ops; ++k) {
          if (!op()) return 4;
        }
        if (::write(done[1], &b, 1) != 1) return 5;
      }
      return 0;
    }));
  }
  ::close(go[0]);
  ::close(done[1]);
  auto collect = [&](int n) {
    char buf[kCrowd];
    for (int got = 0; got < n;) {
      ssize_t r = RetryEintr([&] { return ::read(done[0], buf, static_cast<size_t>(n - got)); });
      if (r <= 0) return false;  // a client died
      got += static_cast<int>(r);
    }
    return true;
  };
  bool ok = collect(kCrowd);
  std::vector<pid_t> metered = kids;
  metered.insert(metered.end(), servers.begin(), servers.end());
  CpuMeter cpu(metered);
  const std::string round(kCrowd, 'g');
  for (auto _ : state) {
    if (!ok) break;
    ok = ::write(go[1], round.data(), round.size()) == static_cast<ssize_t>(round.size()) &&
         collect(kCrowd);
  }
  cpu.Stop(state);
  ::close(go[1]);  // the clients see EOF and exit
  ::close(done[0]);
  for (pid_t k : kids) ReapChild(k, !ok);
  if (!ok) return SkipRow(state, "a client process failed");
  SetOpsPerIteration(state, static_cast<double>(kCrowd) * ops);
}

sockaddr_un UnixAddr(const std::string& path) {
  sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  return a;
}

// A listening AF_UNIX socket in a fresh directory (removed by the destructor).
struct UnixListening {
  std::string dir, path;
  UniqueFd fd;
  UnixListening() {
    char tmpl[] = "/tmp/mproc-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return;
    dir = tmpl;
    path = dir + "/echo";
    fd = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a = UnixAddr(path);
    if (!fd.ok() || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        ::listen(fd.get(), 256) != 0) {
      fd.Reset();
    }
  }
  ~UnixListening() {
    if (!path.empty()) ::unlink(path.c_str());
    if (!dir.empty()) ::rmdir(dir.c_str());
  }
};

// A client of an echo server: one kRequest-byte request, one kReply-byte reply.
struct EchoClient {
  UniqueFd fd;
  bool Connect(const std::string& path) {
    fd = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a = UnixAddr(path);
    return fd.ok() && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  bool RoundTrip() {
    char req[kRequest] = {1}, rep[kReply];
    if (::write(fd.get(), req, sizeof(req)) != static_cast<ssize_t>(sizeof(req))) return false;
    for (size_t got = 0; got < sizeof(rep);) {
      ssize_t r = ::read(fd.get(), rep + got, sizeof(rep) - got);
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  }
};

// The raw echo server on one epoll loop (the manager's own design, minus the manager).
int EpollEcho(int listener) {
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.fd = listener;
  if (!ep.ok() || ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, listener, &ev) != 0) return 1;
  std::unordered_map<int, size_t> pending;  // fd -> request bytes not yet a whole request
  epoll_event events[64];
  for (;;) {
    const int n = ::epoll_wait(ep.get(), events, 64, -1);
    if (n < 0 && errno != EINTR) return 1;
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listener) {
        const int c = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        epoll_event cev = {};
        cev.events = EPOLLIN;
        cev.data.fd = c;
        ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, c, &cev);
        pending[c] = 0;
        continue;
      }
      char buf[4096];
      const ssize_t r = ::read(fd, buf, sizeof(buf));
      if (r <= 0) {
        ::close(fd);
        pending.erase(fd);
        if (pending.empty()) return 0;  // every client gone
        continue;
      }
      size_t& have = pending[fd];
      have += static_cast<size_t>(r);
      char rep[kReply] = {2};
      for (; have >= kRequest; have -= kRequest) (void)::write(fd, rep, sizeof(rep));
    }
  }
}

// The raw echo server with a thread per connection (CPython's manager design, minus Python).
int ThreadEcho(int listener) {
  std::vector<std::thread> threads;
  for (int i = 0; i < kCrowd; ++i) {
    const int c = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return 1;
    threads.emplace_back([c] {
      char req[kRequest], rep[kReply] = {2};
      for (;;) {
        for (size_t got = 0; got < sizeof(req);) {
          ssize_t r = ::read(c, req + got, sizeof(req) - got);
          if (r <= 0) {
            ::close(c);
            return;
          }
          got += static_cast<size_t>(r);
        }
        if (::write(c, rep, sizeof(rep)) != static_cast<ssize_t>(sizeof(rep))) return;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return 0;
}

void EchoCrowd(benchmark::State& state, int (*serve)(int)) {
  UnixListening l;
  if (!l.fd.ok()) return SkipRow(state, "cannot listen on a Unix socket");
  const int listener = l.fd.get();
  const pid_t server = ForkPinnedChild(-1, [&] { return serve(listener); });
  EchoClient client;
  Crowd(state, [&] { return client.Connect(l.path); }, [&] { return client.RoundTrip(); },
        {server});
  ReapChild(server, /*kill=*/true);
}

void ManagerCrowd(benchmark::State& state,
                  ManagerOptions::Backend backend = ManagerOptions::Backend::kAuto) {
  absl::StatusOr<std::unique_ptr<Manager>> m = Manager::Start(WithBackend(backend));
  if (!m.ok()) return SkipRow(state, "Manager::Start failed");
  absl::StatusOr<DictProxy<int64_t, int64_t>> d = (*m)->Dict<int64_t, int64_t>();
  if (!d.ok() || !d->Set(0, 0).ok()) return SkipRow(state, "Dict failed");
  int64_t i = 0;
  Crowd(state, [&] { return d->Set(0, 0).ok(); },  // this process's connection and lease
        [&] {
          const int64_t k = i++;
          return d->Set(k % 16, k).ok();
        },
        {(*m)->pid()});
  (void)(*m)->Shutdown();
}

}  // namespace

MPROC_REPORT_ROWS(ManagerRows) {
  AddPairRows("mproc.manager.dict_set", Section::kMproc,
              [](benchmark::State& s, PinCpus c) { ManagerDictSet(s, c); })
      .Title("Manager Dict<int64, int64> Set from a client process, one round trip")
      .PairBaselines({"kernel.unix_reqrep_48B"})
      .Baselines({"cpython.manager.dict"});
  AddPairRows("mproc.manager.dict_set_epoll", Section::kMproc,
              [](benchmark::State& s, PinCpus c) {
                ManagerDictSet(s, c, ManagerOptions::Backend::kEpoll);
              })
      .Title("As mproc.manager.dict_set (the server on io_uring, the default), the server on "
             "its epoll backend")
      .PairBaselines({"mproc.manager.dict_set", "kernel.unix_reqrep_48B"});
  AddPairRows("mproc.manager.dict_create", Section::kMproc,
              [](benchmark::State& s, PinCpus c) { ManagerDictCreate(s, c); })
      .Title("Manager Dict proxy made and dropped")
      .PairBaselines({"mproc.manager.dict_set"});
  AddRow("kernel.unix_echo_64_clients.epoll", Section::kKernel,
         [](benchmark::State& s) { EchoCrowd(s, EpollEcho); })
      .Title("64 client processes, AF_UNIX request (48 B) / reply (16 B), one epoll-loop server; "
             "time per op, all clients together")
      .PerItem();
  AddRow("kernel.unix_echo_64_clients.threads", Section::kKernel,
         [](benchmark::State& s) { EchoCrowd(s, ThreadEcho); })
      .Title("64 client processes, AF_UNIX request (48 B) / reply (16 B), a server thread per "
             "client; time per op, all clients together")
      .PerItem();
  AddRow("mproc.manager.dict_set.64_clients.epoll", Section::kMproc,
         [](benchmark::State& s) { ManagerCrowd(s, ManagerOptions::Backend::kEpoll); })
      .Title("As mproc.manager.dict_set.64_clients (the server on io_uring, the default), the "
             "server on its epoll backend")
      .Baselines({"mproc.manager.dict_set.64_clients", "kernel.unix_echo_64_clients.epoll",
                  "kernel.unix_echo_64_clients.threads"})
      .PerItem();
  AddRow("mproc.manager.dict_set.64_clients", Section::kMproc,
         [](benchmark::State& s) { ManagerCrowd(s); })
      .Title("64 client processes each setting Dict items on one Manager; time per op, all "
             "clients together")
      .Baselines({"kernel.unix_echo_64_clients.epoll", "kernel.unix_echo_64_clients.threads",
                  "cpython.manager.dict_64_clients"})
      .PerItem();
}

}  // namespace mproc::bench
