// The `microbatch` command line as a library function, so tests can drive it.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace mb {

// Runs `microbatch <args...>` (args excludes the program name). Returns the exit code:
// 0 success, 1 a runtime error (message on err), 2 bad usage (message and usage on err).
int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace mb
