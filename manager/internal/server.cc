#include "manager/internal/server.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/deadline.h"
#include "base/status.h"
#include "base/syscall.h"
#include "manager/internal/protocol.h"
#include "serialize/auth.h"
#include "serialize/cpython_framing.h"
#include "spawn/process.h"

namespace mproc::manager_internal {
namespace {

using Bytes = std::string;

constexpr int64_t kHandshakeNs = 10'000'000'000;  // a client's whole handshake
constexpr int64_t kTicketNs = 60'000'000'000;     // an unclaimed ticket's life
constexpr int64_t kClaimWaitNs = 10'000'000'000;  // a claim waiting for its ticket to arrive

// A dict that keeps insertion order, as Python's.
class OrderedDict {
 public:
  bool Contains(const Bytes& k) const { return index_.count(k) != 0; }
  const Bytes* Find(const Bytes& k) const {
    auto it = index_.find(k);
    return it == index_.end() ? nullptr : &it->second->second;
  }
  void Set(const Bytes& k, Bytes v) {
    auto it = index_.find(k);
    if (it != index_.end()) {
      it->second->second = std::move(v);
      return;
    }
    entries_.emplace_back(k, std::move(v));
    index_.emplace(k, std::prev(entries_.end()));
  }
  bool Erase(const Bytes& k, Bytes* value = nullptr) {
    auto it = index_.find(k);
    if (it == index_.end()) return false;
    if (value != nullptr) *value = std::move(it->second->second);
    entries_.erase(it->second);
    index_.erase(it);
    return true;
  }
  void Clear() {
    entries_.clear();
    index_.clear();
  }
  size_t size() const { return entries_.size(); }
  const std::list<std::pair<Bytes, Bytes>>& entries() const { return entries_; }

 private:
  std::list<std::pair<Bytes, Bytes>> entries_;
  std::unordered_map<Bytes, std::list<std::pair<Bytes, Bytes>>::iterator> index_;
};

struct Object {
  Kind kind;
  uint64_t fingerprint = 0;
  int64_t refs = 0;  // connections' references plus tickets
  OrderedDict dict;
  std::vector<Bytes> list;
  Bytes value;
  std::map<std::string, Bytes> ns;
};

// What a method returns: OK with result bytes, or an error status.
using Result = absl::StatusOr<EncodeBuffer>;

template <typename... A>
absl::StatusOr<std::tuple<A...>> Args(DecodeReader& r) {
  std::tuple<A...> t;
  if (!Codec<std::tuple<A...>>::Decode(r, t)) return r.status();
  if (r.remaining() != 0) return absl::InvalidArgumentError("trailing bytes after the arguments");
  return t;
}

template <typename T>
EncodeBuffer Out(const T& v) {
  EncodeBuffer b;
  Encode(v, b);
  return b;
}

// Python's index rules: negative counts from the end; OUT_OF_RANGE (IndexError) outside.
absl::StatusOr<size_t> Index(int64_t i, size_t size) {
  const int64_t n = static_cast<int64_t>(size);
  if (i < 0) i += n;
  if (i < 0 || i >= n) return absl::OutOfRangeError("IndexError: list index out of range");
  return static_cast<size_t>(i);
}

// Python's slice clamping for a step of 1.
size_t Clamp(int64_t i, size_t size) {
  const int64_t n = static_cast<int64_t>(size);
  if (i < 0) i = std::max<int64_t>(0, i + n);
  return static_cast<size_t>(std::min(i, n));
}

Result CallDict(OrderedDict& d, Method m, DecodeReader& r) {
  switch (m) {
    case Method::kDictSet: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<Bytes, Bytes>(r)));
      d.Set(std::get<0>(a), std::move(std::get<1>(a)));
      return EncodeBuffer();
    }
    case Method::kDictGet: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      const Bytes* v = d.Find(std::get<0>(a));
      if (v == nullptr) return absl::NotFoundError("KeyError: the key is not in the dict");
      return Out(*v);
    }
    case Method::kDictContains: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      return Out(d.Contains(std::get<0>(a)));
    }
    case Method::kDictDel: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      if (!d.Erase(std::get<0>(a))) return absl::NotFoundError("KeyError: the key is not in the dict");
      return EncodeBuffer();
    }
    case Method::kDictLen:
      return Out(static_cast<uint64_t>(d.size()));
    case Method::kDictKeys: {
      std::vector<Bytes> out;
      for (const auto& [k, v] : d.entries()) out.push_back(k);
      return Out(out);
    }
    case Method::kDictValues: {
      std::vector<Bytes> out;
      for (const auto& [k, v] : d.entries()) out.push_back(v);
      return Out(out);
    }
    case Method::kDictItems: {
      std::vector<std::pair<Bytes, Bytes>> out(d.entries().begin(), d.entries().end());
      return Out(out);
    }
    case Method::kDictClear:
      d.Clear();
      return EncodeBuffer();
    case Method::kDictPop: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      Bytes v;
      if (!d.Erase(std::get<0>(a), &v)) return absl::NotFoundError("KeyError: the key is not in the dict");
      return Out(v);
    }
    case Method::kDictSetDefault: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<Bytes, Bytes>(r)));
      if (const Bytes* v = d.Find(std::get<0>(a))) return Out(*v);
      d.Set(std::get<0>(a), std::get<1>(a));
      return Out(std::get<1>(a));
    }
    case Method::kDictUpdate: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<std::vector<std::pair<Bytes, Bytes>>>(r)));
      for (auto& [k, v] : std::get<0>(a)) d.Set(k, std::move(v));
      return EncodeBuffer();
    }
    default:
      break;
  }
  return absl::InvalidArgumentError("not a method of a dict");
}

Result CallList(std::vector<Bytes>& l, Method m, DecodeReader& r) {
  switch (m) {
    case Method::kListAppend: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      l.push_back(std::move(std::get<0>(a)));
      return EncodeBuffer();
    }
    case Method::kListExtend: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<std::vector<Bytes>>(r));
      for (Bytes& v : std::get<0>(a)) l.push_back(std::move(v));
      return EncodeBuffer();
    }
    case Method::kListGet: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<int64_t>(r));
      MPROC_ASSIGN_OR_RETURN(size_t i, Index(std::get<0>(a), l.size()));
      return Out(l[i]);
    }
    case Method::kListSet: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<int64_t, Bytes>(r)));
      MPROC_ASSIGN_OR_RETURN(size_t i, Index(std::get<0>(a), l.size()));
      l[i] = std::move(std::get<1>(a));
      return EncodeBuffer();
    }
    case Method::kListLen:
      return Out(static_cast<uint64_t>(l.size()));
    case Method::kListPop: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<int64_t>(r));
      if (l.empty()) return absl::OutOfRangeError("IndexError: pop from empty list");
      MPROC_ASSIGN_OR_RETURN(size_t i, Index(std::get<0>(a), l.size()));
      Bytes v = std::move(l[i]);
      l.erase(l.begin() + static_cast<ptrdiff_t>(i));
      return Out(v);
    }
    case Method::kListInsert: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<int64_t, Bytes>(r)));
      const size_t i = Clamp(std::get<0>(a), l.size());
      l.insert(l.begin() + static_cast<ptrdiff_t>(i), std::move(std::get<1>(a)));
      return EncodeBuffer();
    }
    case Method::kListRemove:
    case Method::kListIndex: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      auto it = std::find(l.begin(), l.end(), std::get<0>(a));
      if (it == l.end()) return absl::NotFoundError("ValueError: the value is not in the list");
      if (m == Method::kListIndex) return Out(static_cast<uint64_t>(it - l.begin()));
      l.erase(it);
      return EncodeBuffer();
    }
    case Method::kListCount: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      return Out(static_cast<uint64_t>(std::count(l.begin(), l.end(), std::get<0>(a))));
    }
    case Method::kListReverse:
      std::reverse(l.begin(), l.end());
      return EncodeBuffer();
    case Method::kListClear:
      l.clear();
      return EncodeBuffer();
    case Method::kListSlice: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<int64_t, int64_t>(r)));
      const size_t b = Clamp(std::get<0>(a), l.size());
      const size_t e = Clamp(std::get<1>(a), l.size());
      std::vector<Bytes> out;
      if (b < e) out.assign(l.begin() + static_cast<ptrdiff_t>(b), l.begin() + static_cast<ptrdiff_t>(e));
      return Out(out);
    }
    case Method::kListAll:
      return Out(l);
    default:
      break;
  }
  return absl::InvalidArgumentError("not a method of a list");
}

Result CallValue(Bytes& v, Method m, DecodeReader& r) {
  switch (m) {
    case Method::kValueGet:
      return Out(v);
    case Method::kValueSet: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      v = std::move(std::get<0>(a));
      return EncodeBuffer();
    }
    default:
      break;
  }
  return absl::InvalidArgumentError("not a method of a value");
}

Result CallNamespace(std::map<std::string, Bytes>& ns, Method m, DecodeReader& r) {
  switch (m) {
    case Method::kNsGet: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<std::string>(r));
      auto it = ns.find(std::get<0>(a));
      if (it == ns.end()) {
        return absl::NotFoundError(absl::StrCat("AttributeError: the namespace has no '",
                                                std::get<0>(a), "'"));
      }
      return Out(it->second);
    }
    case Method::kNsSet: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<std::string, Bytes>(r)));
      ns[std::get<0>(a)] = std::move(std::get<1>(a));
      return EncodeBuffer();
    }
    case Method::kNsDel: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<std::string>(r));
      if (ns.erase(std::get<0>(a)) == 0) {
        return absl::NotFoundError(absl::StrCat("AttributeError: the namespace has no '",
                                                std::get<0>(a), "'"));
      }
      return EncodeBuffer();
    }
    case Method::kNsNames: {
      std::vector<std::string> names;
      for (const auto& [k, v] : ns) names.push_back(k);
      return Out(names);
    }
    default:
      break;
  }
  return absl::InvalidArgumentError("not a method of a namespace");
}

class Server {
 public:
  Server(UniqueFd listener, ServerConfig config)
      : listener_(std::move(listener)), config_(std::move(config)) {}

  int Run();

 private:
  struct Conn {
    UniqueFd fd;
    std::unique_ptr<ServerHandshaker> handshake;  // until authenticated
    int64_t handshake_deadline_ns = 0;
    std::string in;       // bytes received, not yet a whole message
    std::string out;      // replies not yet written
    size_t out_done = 0;  // ...of which written
    bool want_write = false;
    std::unordered_map<uint64_t, int64_t> refs;  // object -> references this connection holds
  };
  struct Ticket {
    uint64_t object;
    int64_t expires_ns;
  };
  struct ForkLease {
    std::vector<uint64_t> objects;
    int64_t expires_ns;
  };
  struct ParkedClaim {
    int conn;
    uint64_t call_id;
    uint64_t ticket;
    uint64_t fingerprint;
    int64_t deadline_ns;
  };

  void Accept();
  void Close(int fd);
  void OnReadable(int fd);
  void Flush(Conn& c);
  // Handles every whole message in c.in; false when the connection must close.
  bool Dispatch(Conn& c);
  bool Handle(Conn& c, std::span<const std::byte> msg);
  void Reply(Conn& c, uint64_t call_id, const absl::Status& status, const EncodeBuffer* body);
  void Ref(Conn& c, uint64_t id, int64_t n);
  void Unref(uint64_t id, int64_t n);
  absl::Status Claim(Conn& c, uint64_t ticket, uint64_t fingerprint, bool* parked,
                     uint64_t call_id);
  void Expire(int64_t now);
  int64_t NextWakeNs() const;

  UniqueFd listener_;
  ServerConfig config_;
  UniqueFd epoll_;
  const uint64_t nonce_ = config_.nonce;
  std::unordered_map<int, Conn> conns_;
  std::unordered_map<uint64_t, Object> objects_;
  uint64_t next_object_ = 1;
  std::unordered_map<uint64_t, Ticket> tickets_;
  std::unordered_map<uint64_t, ForkLease> fork_leases_;
  std::vector<ParkedClaim> parked_;
  bool stop_ = false;
};

void Server::Accept() {
  for (;;) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd.ok()) return;  // EAGAIN, or a client gone before we took it
    Conn c;
    c.handshake = std::make_unique<ServerHandshaker>(fd.get(), config_.authkey);
    if (!c.handshake->Start().ok()) continue;
    c.handshake_deadline_ns = MonotonicNowNs() + kHandshakeNs;
    epoll_event ev = {};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd.get();
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) continue;
    const int key = fd.get();
    c.fd = std::move(fd);
    conns_[key] = std::move(c);
  }
}

void Server::Close(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  // The lease ends with the connection: every reference it held is dropped.
  std::unordered_map<uint64_t, int64_t> refs = std::move(it->second.refs);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  conns_.erase(it);
  std::erase_if(parked_, [fd](const ParkedClaim& p) { return p.conn == fd; });
  for (const auto& [id, n] : refs) Unref(id, n);
}

void Server::Ref(Conn& c, uint64_t id, int64_t n) {
  c.refs[id] += n;
  objects_[id].refs += n;
}

void Server::Unref(uint64_t id, int64_t n) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  it->second.refs -= n;
  if (it->second.refs <= 0) objects_.erase(it);
}

void Server::Reply(Conn& c, uint64_t call_id, const absl::Status& status,
                   const EncodeBuffer* body) {
  EncodeBuffer msg;
  Encode(call_id, msg);
  const uint8_t code = static_cast<uint8_t>(status.code());
  Encode(code, msg);
  if (!status.ok()) {
    Encode(std::string(status.message()), msg);
  } else if (body != nullptr) {
    msg.Append(body->bytes().data(), body->size());
  }
  c.out += CPythonLengthHeader(msg.size());
  c.out.append(reinterpret_cast<const char*>(msg.bytes().data()), msg.size());
}

void Server::Flush(Conn& c) {
  while (c.out_done < c.out.size()) {
    ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_done, c.out.size() - c.out_done,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        c.out.clear();  // the client is gone: its close comes through epoll
        c.out_done = 0;
      }
      break;
    }
    c.out_done += static_cast<size_t>(n);
  }
  if (c.out_done == c.out.size()) {
    c.out.clear();
    c.out_done = 0;
  } else if (c.out_done > (1 << 20)) {
    c.out.erase(0, c.out_done);
    c.out_done = 0;
  }
  const bool want = !c.out.empty();
  if (want != c.want_write) {
    c.want_write = want;
    epoll_event ev = {};
    ev.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0);
    ev.data.fd = c.fd.get();
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
  }
}

absl::Status Server::Claim(Conn& c, uint64_t ticket, uint64_t fingerprint, bool* parked,
                           uint64_t call_id) {
  *parked = false;
  auto it = tickets_.find(ticket);
  if (it == tickets_.end()) {
    // The ticket may still be on its way (the sender's one-way message, on its own
    // connection): wait for it a while.
    parked_.push_back({c.fd.get(), call_id, ticket, fingerprint, MonotonicNowNs() + kClaimWaitNs});
    *parked = true;
    return absl::OkStatus();
  }
  const uint64_t id = it->second.object;
  auto obj = objects_.find(id);
  if (obj == objects_.end()) {
    tickets_.erase(it);
    return absl::NotFoundError("the proxy's object no longer exists");
  }
  if (obj->second.fingerprint != fingerprint) {
    return absl::InvalidArgumentError(
        "the proxy was decoded with other element types than the object was made with");
  }
  // The ticket's reference becomes this connection's.
  tickets_.erase(it);
  c.refs[id] += 1;
  return absl::OkStatus();
}

bool Server::Handle(Conn& c, std::span<const std::byte> msg) {
  DecodeReader r(msg);
  uint64_t call_id = 0, object = 0;
  uint8_t op_byte = 0;
  if (!Codec<uint64_t>::Decode(r, call_id) || !Codec<uint8_t>::Decode(r, op_byte) ||
      !Codec<uint64_t>::Decode(r, object)) {
    return false;  // not a request: the stream cannot be trusted any further
  }
  const Op op = static_cast<Op>(op_byte);
  switch (op) {
    case Op::kHello: {
      EncodeBuffer b;
      Encode(nonce_, b);
      Encode(static_cast<int32_t>(::getpid()), b);
      Reply(c, call_id, absl::OkStatus(), &b);
      return true;
    }
    case Op::kCreate: {
      uint8_t kind = 0;
      uint64_t fingerprint = 0;
      std::string initial;
      if (!Codec<uint8_t>::Decode(r, kind) || !Codec<uint64_t>::Decode(r, fingerprint) ||
          !Codec<std::string>::Decode(r, initial) || kind < 1 || kind > 4) {
        Reply(c, call_id, absl::InvalidArgumentError("malformed create"), nullptr);
        return true;
      }
      const uint64_t id = next_object_++;
      Object& o = objects_[id];
      o.kind = static_cast<Kind>(kind);
      o.fingerprint = fingerprint;
      if (o.kind == Kind::kValue) o.value = std::move(initial);
      Ref(c, id, 1);
      EncodeBuffer b;
      Encode(id, b);
      Reply(c, call_id, absl::OkStatus(), &b);
      return true;
    }
    case Op::kCall: {
      uint16_t method = 0;
      if (!Codec<uint16_t>::Decode(r, method)) return false;
      auto it = objects_.find(object);
      if (it == objects_.end() || c.refs.count(object) == 0) {
        Reply(c, call_id,
              absl::FailedPreconditionError("the proxy's object is not held by this client"),
              nullptr);
        return true;
      }
      Object& o = it->second;
      Result res = absl::InvalidArgumentError("unknown object kind");
      const Method m = static_cast<Method>(method);
      switch (o.kind) {
        case Kind::kDict: res = CallDict(o.dict, m, r); break;
        case Kind::kList: res = CallList(o.list, m, r); break;
        case Kind::kValue: res = CallValue(o.value, m, r); break;
        case Kind::kNamespace: res = CallNamespace(o.ns, m, r); break;
      }
      if (res.ok()) {
        Reply(c, call_id, absl::OkStatus(), &*res);
      } else {
        Reply(c, call_id, res.status(), nullptr);
      }
      return true;
    }
    case Op::kDecref: {
      auto it = c.refs.find(object);
      if (it != c.refs.end()) {
        if (--it->second <= 0) c.refs.erase(it);
        Unref(object, 1);
      }
      return true;
    }
    case Op::kTicket: {
      uint64_t ticket = 0;
      if (!Codec<uint64_t>::Decode(r, ticket)) return false;
      if (objects_.count(object) == 0 || c.refs.count(object) == 0) return true;
      if (tickets_.emplace(ticket, Ticket{object, MonotonicNowNs() + kTicketNs}).second) {
        objects_[object].refs += 1;  // the ticket's own reference
      }
      // A claim that came first is served now.
      for (size_t i = 0; i < parked_.size(); ++i) {
        if (parked_[i].ticket != ticket) continue;
        ParkedClaim p = parked_[i];
        parked_.erase(parked_.begin() + static_cast<ptrdiff_t>(i));
        auto waiting = conns_.find(p.conn);
        if (waiting == conns_.end()) break;
        bool parked = false;
        absl::Status s = Claim(waiting->second, p.ticket, p.fingerprint, &parked, p.call_id);
        if (!parked) {
          Reply(waiting->second, p.call_id, s, nullptr);
          Flush(waiting->second);
        }
        break;
      }
      return true;
    }
    case Op::kClaim: {
      uint64_t ticket = 0, fingerprint = 0;
      if (!Codec<uint64_t>::Decode(r, ticket) || !Codec<uint64_t>::Decode(r, fingerprint)) {
        return false;
      }
      bool parked = false;
      absl::Status s = Claim(c, ticket, fingerprint, &parked, call_id);
      if (!parked) Reply(c, call_id, s, nullptr);
      return true;
    }
    case Op::kIncref: {
      uint64_t fingerprint = 0;
      if (!Codec<uint64_t>::Decode(r, fingerprint)) return false;
      auto it = objects_.find(object);
      if (it == objects_.end()) {
        Reply(c, call_id,
              absl::NotFoundError("the proxy's object no longer exists (every process that "
                                  "held it dropped it)"),
              nullptr);
      } else if (it->second.fingerprint != fingerprint) {
        Reply(c, call_id, absl::InvalidArgumentError("the proxy's element types differ"), nullptr);
      } else {
        Ref(c, object, 1);
        Reply(c, call_id, absl::OkStatus(), nullptr);
      }
      return true;
    }
    case Op::kForkLease: {
      uint64_t token = 0;
      if (!Codec<uint64_t>::Decode(r, token)) return false;
      ForkLease lease{{}, MonotonicNowNs() + kTicketNs};
      for (const auto& [id, n] : c.refs) {
        lease.objects.push_back(id);
        objects_[id].refs += 1;  // the lease's own reference, until the child claims it
      }
      if (!fork_leases_.emplace(token, std::move(lease)).second) {
        return false;  // a token twice: not from an honest client
      }
      return true;
    }
    case Op::kClaimFork: {
      uint64_t token = 0;
      if (!Codec<uint64_t>::Decode(r, token)) return false;
      auto it = fork_leases_.find(token);
      if (it == fork_leases_.end()) {
        Reply(c, call_id, absl::NotFoundError("no such fork lease (it expired after 60 s)"),
              nullptr);
        return true;
      }
      std::vector<uint64_t> claimed;
      for (uint64_t id : it->second.objects) {
        if (objects_.count(id) == 0) continue;
        c.refs[id] += 1;  // the lease's reference becomes this connection's
        claimed.push_back(id);
      }
      fork_leases_.erase(it);
      EncodeBuffer b;
      Encode(claimed, b);
      Reply(c, call_id, absl::OkStatus(), &b);
      return true;
    }
    case Op::kCount: {
      EncodeBuffer b;
      Encode(static_cast<uint64_t>(objects_.size()), b);
      Reply(c, call_id, absl::OkStatus(), &b);
      return true;
    }
    case Op::kShutdown:
      Reply(c, call_id, absl::OkStatus(), nullptr);
      stop_ = true;
      return true;
  }
  Reply(c, call_id, absl::InvalidArgumentError("unknown request"), nullptr);
  return true;
}

bool Server::Dispatch(Conn& c) {
  size_t pos = 0;
  bool ok = true;
  while (ok) {
    if (c.in.size() - pos < 4) break;
    const auto* h = reinterpret_cast<const unsigned char*>(c.in.data() + pos);
    const int32_t len32 = static_cast<int32_t>((uint32_t{h[0]} << 24) | (uint32_t{h[1]} << 16) |
                                               (uint32_t{h[2]} << 8) | uint32_t{h[3]});
    // The 8-byte form announces more than 2 GiB: more than any request may be.
    if (len32 < 0 || static_cast<uint64_t>(len32) > kMaxMessage) {
      ok = false;
      break;
    }
    const size_t len = static_cast<size_t>(len32);
    if (c.in.size() - pos - 4 < len) break;
    ok = Handle(c, std::span<const std::byte>(
                       reinterpret_cast<const std::byte*>(c.in.data() + pos + 4), len));
    pos += 4 + len;
  }
  c.in.erase(0, pos);
  return ok;
}

void Server::OnReadable(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Conn& c = it->second;
  if (c.handshake != nullptr) {
    absl::StatusOr<bool> done = c.handshake->OnReadable();
    if (!done.ok()) return Close(fd);
    if (!*done) return;
    c.handshake.reset();
  }
  char buf[64 << 10];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0) return Close(fd);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return Close(fd);
    }
    c.in.append(buf, static_cast<size_t>(n));
    if (!Dispatch(c)) return Close(fd);
    if (c.in.size() > kMaxMessage + 4) return Close(fd);
    if (stop_) break;
  }
  Flush(c);
  // A client that never reads its replies does not make the server hold them forever.
  if (c.out.size() - c.out_done > kMaxMessage) Close(fd);
}

void Server::Expire(int64_t now) {
  for (auto it = tickets_.begin(); it != tickets_.end();) {
    if (it->second.expires_ns > now) {
      ++it;
      continue;
    }
    const uint64_t id = it->second.object;
    it = tickets_.erase(it);
    Unref(id, 1);
  }
  for (auto it = fork_leases_.begin(); it != fork_leases_.end();) {
    if (it->second.expires_ns > now) {
      ++it;
      continue;
    }
    std::vector<uint64_t> ids = std::move(it->second.objects);
    it = fork_leases_.erase(it);
    for (uint64_t id : ids) Unref(id, 1);
  }
  for (size_t i = parked_.size(); i-- > 0;) {
    if (parked_[i].deadline_ns > now) continue;
    ParkedClaim p = parked_[i];
    parked_.erase(parked_.begin() + static_cast<ptrdiff_t>(i));
    auto c = conns_.find(p.conn);
    if (c == conns_.end()) continue;
    Reply(c->second, p.call_id,
          absl::NotFoundError("the proxy's reference was never handed over (its sender died, "
                              "or took longer than 60 s)"),
          nullptr);
    Flush(c->second);
  }
  std::vector<int> late;
  for (const auto& [fd, c] : conns_) {
    if (c.handshake != nullptr && c.handshake_deadline_ns <= now) late.push_back(fd);
  }
  for (int fd : late) Close(fd);
}

int64_t Server::NextWakeNs() const {
  int64_t wake = INT64_MAX;
  for (const auto& [t, ticket] : tickets_) wake = std::min(wake, ticket.expires_ns);
  for (const auto& [t, lease] : fork_leases_) wake = std::min(wake, lease.expires_ns);
  for (const ParkedClaim& p : parked_) wake = std::min(wake, p.deadline_ns);
  for (const auto& [fd, c] : conns_) {
    if (c.handshake != nullptr) wake = std::min(wake, c.handshake_deadline_ns);
  }
  return wake;
}

int Server::Run() {
  epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.ok() || SetNonBlocking(listener_.get(), true) < 0) return 1;
  epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.fd = listener_.get();
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener_.get(), &ev) != 0) return 1;
  epoll_event events[64];
  while (!stop_) {
    const int64_t wake = NextWakeNs();
    const int64_t now = MonotonicNowNs();
    const int timeout_ms =
        wake == INT64_MAX ? -1 : static_cast<int>(std::max<int64_t>(0, wake - now) / 1'000'000 + 1);
    int n = ::epoll_wait(epoll_.get(), events, 64, timeout_ms);
    if (n < 0 && errno != EINTR) return 1;
    for (int i = 0; i < n && !stop_; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listener_.get()) {
        Accept();
        continue;
      }
      auto it = conns_.find(fd);
      if (it == conns_.end()) continue;
      if (events[i].events & EPOLLOUT) Flush(it->second);
      if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) OnReadable(fd);
    }
    Expire(MonotonicNowNs());
  }
  // Shutdown: the replies written so far go out (best effort, briefly), then the server ends.
  for (auto& [fd, c] : conns_) {
    if (!c.out.empty()) {
      (void)SetNonBlocking(fd, false);
      const std::string_view rest(c.out.data() + c.out_done, c.out.size() - c.out_done);
      (void)WriteAll(fd, rest.data(), rest.size(), Deadline::After(absl::Seconds(1)),
                     "manager reply");
    }
  }
  return 0;
}

}  // namespace

int ServeManager(UniqueFd listener, ServerConfig config) {
  ::signal(SIGINT, SIG_IGN);  // a terminal's Ctrl-C is the owner's to handle (CPython's rule)
  ::signal(SIGPIPE, SIG_IGN);
  if (!config.standalone) ExitWhenParentExits();
  Server server(std::move(listener), std::move(config));
  return server.Run();
}

}  // namespace mproc::manager_internal
