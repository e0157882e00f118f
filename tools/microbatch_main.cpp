// The `microbatch` command line; everything is in cli.cpp.
#include <iostream>
#include <string>
#include <vector>

#include "engine/communicator.h"
#include "tools/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const int code = mb::run_cli(args, std::cout, std::cerr);
  // A rank that failed has printed why (naming itself); the others may be waiting for it in
  // a collective, so it ends the whole job rather than leave them hanging. 130 (interrupted)
  // is reached by every rank together.
  if (code != 0 && code != 130 && mb::launched_as_ranks()) {
    std::cerr << std::flush;
    std::cout << std::flush;
    try {
      mb::launched_communicator()->abort(code);
    } catch (...) {
      return code;  // MPI never started: there is nobody to wait for us
    }
  }
  return code;
}
