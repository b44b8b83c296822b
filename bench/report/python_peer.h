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

// The absolute path of `prog` (as given when it has a '/'), looked up in PATH; "" when absent.
std::string FindOnPath(const std::string& prog);
// A file of this binary's runfiles by its workspace path ("mpi/mpi_rows"); "" when absent.
std::string FindRunfile(const std::string& rel);

// Runs `args` (args[0] an absolute path) in `env` ("K=V" each; nullptr: this process's) and
// reads the rows it prints as JSON lines: a header {"version": ...} (the PeerRun's version,
// after `version_prefix`), then {"row": id, "samples": [ns per op...], "note": ...,
// "skipped": ...} per row. A program that prints nothing is a skipped run, with its exit code.
PeerRun RunPeerProgram(const std::vector<std::string>& args, const std::vector<std::string>* env,
                       const std::string& version_prefix);

// Runs `python` on the peer script (found next to this binary's runfiles unless `script` is
// given), restricted to `only` when non-empty. A missing python3 or script is a skipped
// section, never a failure.
PeerRun RunPythonPeer(const std::string& python, const std::string& script, bool quick,
                      const std::vector<std::string>& only);

}  // namespace mproc::bench

#endif  // MPROC_BENCH_REPORT_PYTHON_PEER_H_
