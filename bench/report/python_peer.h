// bench/report/python_peer.h — runs bench/peers/cpython_mp.py and reads its JSON lines.
#ifndef MPROC_BENCH_REPORT_PYTHON_PEER_H_
#define MPROC_BENCH_REPORT_PYTHON_PEER_H_

#include <map>
#include <string>
#include <vector>

#include "bench/report/output.h"

namespace mproc::bench {

struct PeerRun {
  std::string version;                    // "3.11.7", empty when it did not run
  std::string skipped;                    // non-empty: the whole section is skipped, and why
  std::map<std::string, RowResult> rows;  // by row id
};

// Runs `python` on the peer script (found next to this binary's runfiles unless `script` is
// given), restricted to `only` when non-empty. A missing python3 or script is a skipped
// section, never a failure.
PeerRun RunPythonPeer(const std::string& python, const std::string& script, bool quick,
                      const std::vector<std::string>& only);

}  // namespace mproc::bench

#endif  // MPROC_BENCH_REPORT_PYTHON_PEER_H_
