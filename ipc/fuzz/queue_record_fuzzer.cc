// libFuzzer target: the Queue's socket-record reader against an arbitrary record written into
// the queue's own SEQPACKET channel, followed by a real item. The hostile record gives a clear
// error (or decodes as some value) and never crashes, and the real item behind it still
// arrives intact: the queue does not desynchronise.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "base/unique_fd.h"
#include "ipc/queue.h"
#include "serialize/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 70000) return 0;
  absl::StatusOr<mproc::Queue<mproc::UniqueFd>> q = mproc::Queue<mproc::UniqueFd>::Create();
  if (!q.ok()) std::abort();
  // The queue's handle encodes its descriptors as (rx, tx, segment, doorbell): write into tx.
  mproc::EncodeBuffer handle;
  mproc::Encode(*q, handle);
  if (handle.fds().size() != 4) std::abort();
  const int tx = handle.fds()[1];
  if (::send(tx, data, size, MSG_DONTWAIT | MSG_NOSIGNAL) != static_cast<ssize_t>(size)) return 0;
  mproc::UniqueFd devnull(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  if (!q->Put(devnull, absl::Seconds(1)).ok()) std::abort();
  // The first Get reads the hostile record (a bad record is an error, never a crash); the real
  // item comes on the first or second Get; after it the queue is empty.
  bool got_real = false;
  for (int i = 0; i < 2 && !got_real; ++i) {
    absl::StatusOr<mproc::UniqueFd> v = q->Get(absl::Seconds(1));
    if (v.ok()) {
      got_real = true;  // the real item, or a hostile record that decoded (it cannot carry fds)
    } else if (v.status().code() != absl::StatusCode::kInvalidArgument &&
               v.status().code() != absl::StatusCode::kOutOfRange &&
               v.status().code() != absl::StatusCode::kDataLoss) {
      std::abort();
    }
  }
  if (!got_real) std::abort();
  absl::StatusOr<mproc::UniqueFd> rest = q->GetNowait();
  if (rest.ok() || rest.status().code() != absl::StatusCode::kUnavailable) std::abort();
  return 0;
}
