// manager/internal/objects.h — objects of the user's own types kept in the manager's server
// (CPython's BaseManager.register), and the code that runs on them there.
//
// The server runs the user's code for these: a factory that builds the object from its
// arguments, and methods, free functions (or captureless lambdas) taking the object by
// reference, named across processes by code references (base/code_ref.h), as Pool tasks are.
// The server must therefore be the same executable (Start, under any start method); another
// binary's server refuses the code reference.
#ifndef MPROC_MANAGER_INTERNAL_OBJECTS_H_
#define MPROC_MANAGER_INTERNAL_OBJECTS_H_

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "base/mutex.h"
#include "manager/internal/protocol.h"
#include "serialize/codec.h"
#include "serialize/remote_error.h"
#include "spawn/process.h"

namespace mproc {

// What a method returns to keep its result in the server as another object, handed back as
// a proxy to it (CPython's method_to_typeid): `return mproc::Managed<Page>{Page(...)};`.
template <typename T>
struct Managed {
  T value;
};

namespace manager_internal {

// How a method makes a new object in the server: it returns the new object's id, referenced by
// the calling client.
struct NewObject {
  void* ctx = nullptr;
  uint64_t (*make)(void* ctx, std::shared_ptr<void> object, uint64_t fingerprint) = nullptr;
};

// The server calls these through function pointers decoded from the request.
using ObjectFactory = std::shared_ptr<void> (*)(DecodeReader& in, std::string* error);
using ObjectEntry = void (*)(void* self, DecodeReader& in, EncodeBuffer& out,
                             const NewObject& make);

// An ObjectEntry's output: a tag, then the result.
inline constexpr uint8_t kObjectValue = 0;  // the method's result, encoded
inline constexpr uint8_t kObjectError = 1;  // a RemoteError: the method threw
inline constexpr uint8_t kObjectNew = 2;    // u64 id, u64 fingerprint: a Managed<T> result

template <typename T>
struct IsManaged : std::false_type {};
template <typename T>
struct IsManaged<Managed<T>> : std::true_type {
  using Inner = T;
};

// Builds a T from its encoded constructor arguments A... .
template <typename T, typename... A>
std::shared_ptr<void> MakeObject(DecodeReader& in, std::string* error) {
  std::tuple<A...> args;
  if (!Codec<std::tuple<A...>>::Decode(in, args)) {
    *error = std::string(in.status().message());
    return nullptr;
  }
  try {
    return std::apply([](auto&... a) { return std::make_shared<T>(std::move(a)...); }, args);
  } catch (const std::exception& e) {
    *error = std::string("the object's constructor threw: ") + e.what();
  } catch (...) {
    *error = "the object's constructor threw";
  }
  return nullptr;
}

inline void EncodeDecodeError(const DecodeReader& in, EncodeBuffer& out) {
  RemoteError e;
  e.type_name = "mproc::DecodeError";
  e.what = std::string(in.status().message());
  e.pid = ::getpid();
  e.process_name = CurrentProcessName();
  Encode(kObjectError, out);
  Encode(e, out);
}

template <typename T, typename R, typename... P>
void Invoke(R (*fn)(T&, P...), void* self, std::tuple<std::decay_t<P>...>& args,
            EncodeBuffer& out, const NewObject& make);

// Runs the method R (*)(T&, P...) on the object with its encoded arguments.
template <typename T, typename R, typename... P>
void RunMethod(void* self, DecodeReader& in, EncodeBuffer& out, const NewObject& make) {
  R (*fn)(T&, P...) = nullptr;
  std::tuple<std::decay_t<P>...> args;
  if (!Codec<R (*)(T&, P...)>::Decode(in, fn) ||
      !Codec<std::tuple<std::decay_t<P>...>>::Decode(in, args) || fn == nullptr) {
    return EncodeDecodeError(in, out);
  }
  Invoke(fn, self, args, out, make);
}

// A method registered by name (RegisterMethod): the function comes from the server's own
// registry, only its arguments from the request.
using NamedEntry = void (*)(const void* fn, void* self, DecodeReader& in, EncodeBuffer& out,
                            const NewObject& make);
template <typename T, typename R, typename... P>
void RunNamedMethod(const void* f, void* self, DecodeReader& in, EncodeBuffer& out,
                    const NewObject& make) {
  auto fn = reinterpret_cast<R (*)(T&, P...)>(const_cast<void*>(f));
  std::tuple<std::decay_t<P>...> args;
  if (!Codec<std::tuple<std::decay_t<P>...>>::Decode(in, args)) return EncodeDecodeError(in, out);
  if (in.remaining() != 0) {
    RemoteError e;
    e.type_name = "mproc::DecodeError";
    e.what = "more arguments than the method takes";
    e.pid = ::getpid();
    e.process_name = CurrentProcessName();
    Encode(kObjectError, out);
    Encode(e, out);
    return;
  }
  Invoke(fn, self, args, out, make);
}

template <typename T, typename R, typename... P>
void Invoke(R (*fn)(T&, P...), void* self, std::tuple<std::decay_t<P>...>& args,
            EncodeBuffer& out, const NewObject& make) {
  T& object = *static_cast<T*>(self);
  try {
    if constexpr (std::is_void_v<R>) {
      std::apply([&](auto&... a) { fn(object, std::move(a)...); }, args);
      Encode(kObjectValue, out);
      Encode(std::monostate{}, out);
    } else if constexpr (IsManaged<R>::value) {
      using Inner = typename IsManaged<R>::Inner;
      R r = std::apply([&](auto&... a) { return fn(object, std::move(a)...); }, args);
      const uint64_t fingerprint = Fingerprint<Inner>();
      const uint64_t id =
          make.make(make.ctx, std::make_shared<Inner>(std::move(r.value)), fingerprint);
      Encode(kObjectNew, out);
      Encode(id, out);
      Encode(fingerprint, out);
    } else {
      R r = std::apply([&](auto&... a) { return fn(object, std::move(a)...); }, args);
      Encode(kObjectValue, out);
      Encode(r, out);
    }
  } catch (...) {
    out.Clear();
    Encode(kObjectError, out);
    Encode(CaptureCurrentException(CurrentProcessName()), out);
  }
}

// A method run on a value the server keeps as bytes (a Dict's entry, a Value): decodes it as
// T, runs the method as RunMethod does, and stores the changed value only if the method
// returned (a throw leaves the stored bytes as they were).
using BytesEntry = void (*)(std::string* stored, DecodeReader& in, EncodeBuffer& out);

template <typename T, typename R, typename... P>
void RunOnBytes(std::string* stored, DecodeReader& in, EncodeBuffer& out) {
  static_assert(!IsManaged<R>::value, "an update cannot return Managed<T>");
  absl::StatusOr<T> value = Decode<T>(AsBytes(*stored));
  if (!value.ok()) {
    RemoteError e;
    e.type_name = "mproc::DecodeError";
    e.what = "the stored value does not decode as the method's type: " +
             std::string(value.status().message());
    e.pid = ::getpid();
    e.process_name = CurrentProcessName();
    Encode(kObjectError, out);
    Encode(e, out);
    return;
  }
  RunMethod<T, R, P...>(&*value, in, out, NewObject{});
  if (out.size() > 0 && out.bytes()[0] == std::byte{kObjectValue}) {
    EncodeBuffer b;
    Encode(*value, b);
    stored->assign(reinterpret_cast<const char*>(b.bytes().data()), b.size());
  }
}

// Types and methods registered by name, in this executable (RegisterType, RegisterMethod).
struct NamedMethod {
  NamedEntry entry = nullptr;
  const void* fn = nullptr;
};
struct NamedType {
  ObjectFactory factory = nullptr;
  std::map<std::string, NamedMethod, std::less<>> methods;
};
Mutex& NamedTypesMutex();
std::map<std::string, NamedType, std::less<>>& NamedTypes()
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(NamedTypesMutex());

template <typename Fn>
struct MethodTraits;
template <typename R, typename T, typename... P>
struct MethodTraits<R (*)(T&, P...)> {
  using Result = R;
  using Object = T;
  static constexpr ObjectEntry kEntry = &RunMethod<T, R, P...>;
  static constexpr NamedEntry kNamedEntry = &RunNamedMethod<T, R, P...>;
  static constexpr BytesEntry kBytesEntry = &RunOnBytes<T, R, P...>;
  using Args = std::tuple<std::decay_t<P>...>;
};

}  // namespace manager_internal
}  // namespace mproc

#endif  // MPROC_MANAGER_INTERNAL_OBJECTS_H_
