// Seed 004, multiprocessing.Manager: a dict and a list in a server process, changed by a child.
#include <string>
#include <variant>

#include "examples/py.h"
#include "manager/manager.h"
#include "spawn/process.h"

using Field = std::variant<bool, int>;  // the dict holds a bool and an int

void ModifyData(mproc::DictProxy<std::string, Field> d, mproc::ListProxy<std::string> l) {
  (void)d.Set("processed", true);
  (void)d.Update("count", [](Field& v) { v = std::get<int>(v) + 1; });  // d['count'] += 1
  (void)l.Append("done");
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto manager = mproc::Manager::Start().value();
  auto shared_dict = manager->Dict<std::string, Field>({{"processed", false}, {"count", 0}}).value();
  auto shared_list = manager->List<std::string>().value();

  mproc::Process p(ModifyData, shared_dict, shared_list);
  if (!p.Start().ok() || !p.Join().ok()) return 1;

  py::Print(py::DictRepr(shared_dict.Items().value()));
  // {'processed': True, 'count': 1}
  py::Print(shared_list.ToVector().value());
  // ['done']
}
