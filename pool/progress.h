// pool/progress.h — a one-line progress bar for a terminal, as a Pool Progress callback.
//
//   pool->Map(Square, inputs, /*chunksize=*/0, ProgressBar("squares"));
//   // squares [##############----------------]  4700/10000  47%
//
// Draws on `fd` (stderr by default) only when it is a terminal; otherwise the callback does
// nothing, so logs and pipes stay clean. Redrawn in place ("\r"), at most every 100 ms, and
// once at the end (done == total), followed by a newline. With an unknown total (0: IMap over a
// generator) it shows the count only.
//
// Thread-safety: the callback may be called from any thread (a mutex serialises drawing).
#ifndef MPROC_POOL_PROGRESS_H_
#define MPROC_POOL_PROGRESS_H_

#include <unistd.h>

#include <cstddef>
#include <string>

#include "pool/pool.h"

namespace mproc {

Progress ProgressBar(std::string label = "", int fd = STDERR_FILENO);

// The line ProgressBar draws for (done, total), without the leading "\r" (tests, custom UIs).
std::string ProgressLine(const std::string& label, size_t done, size_t total, int width = 30);

}  // namespace mproc

#endif  // MPROC_POOL_PROGRESS_H_
