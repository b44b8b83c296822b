// ipc/internal/queue_socket.h — the Queue's socket path: items carrying descriptors and items
// bigger than a ring, one SOCK_SEQPACKET record each (see ipc/internal/queue_state.h). Internal
// to ipc/.
#ifndef MPROC_IPC_INTERNAL_QUEUE_SOCKET_H_
#define MPROC_IPC_INTERNAL_QUEUE_SOCKET_H_

#include <cstddef>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/deadline.h"
#include "base/unique_fd.h"
#include "ipc/internal/queue_state.h"
#include "serialize/buffer.h"

namespace mproc {
namespace ipc_internal {

// Whether `item` goes on the socket rather than into a ring.
bool UsesSocket(const EncodeBuffer& item, const QueueShared& s);
// Sends `items` (all socket items) on the socket, after this producer's ring items (requires
// put_mu, slots taken). How many were sent, or an error when none was.
absl::StatusOr<size_t> SocketPut(QueueShared& s, int ri, std::span<const EncodeBuffer> items,
                                 const Deadline& deadline, bool block)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.put_mu);
// Receives one socket record (non-blocking); see queue_socket.cc.
absl::Status TakeFromSocket(QueueShared& s, bool force, TakeBuffer* bytes,
                            std::vector<UniqueFd>* fds, bool* counted);
// The oldest item a Get here received but could not map.
absl::Status TakeStashed(QueueShared& s, TakeBuffer* bytes, std::vector<UniqueFd>* fds);

}  // namespace ipc_internal
}  // namespace mproc

#endif  // MPROC_IPC_INTERNAL_QUEUE_SOCKET_H_
