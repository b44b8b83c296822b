// Seed 000 §59.13: the child sends on its end of a Pipe; the parent receives on the other.
#include <string>
#include <utility>

#include "examples/py.h"
#include "ipc/connection.h"
#include "spawn/process.h"

void Worker(mproc::Connection conn) {
  (void)conn.Send(std::string("hello"));
  (void)conn.Close();
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto [parent_conn, child_conn] = mproc::Pipe().value();
  mproc::Process p(Worker, std::move(child_conn));
  if (!p.Start().ok()) return 1;
  py::Print(parent_conn.Recv<std::string>().value());
  if (!p.Join().ok()) return 1;
}
