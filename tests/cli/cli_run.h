// The command line driven in process, for the CLI tests: exit code, stdout and stderr.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "tools/cli.h"

namespace mb::testing {

struct CliResult {
  int code;
  std::string out;
  std::string err;
};

inline CliResult run(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int code = run_cli(args, out, err);
  return {code, out.str(), err.str()};
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace mb::testing
