// The `microbatch` command line; everything is in cli.cpp.
#include <iostream>
#include <string>
#include <vector>

#include "tools/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return mb::run_cli(args, std::cout, std::cerr);
}
