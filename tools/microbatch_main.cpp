// The `microbatch` command line.
#include <CLI/CLI.hpp>
#include <iostream>

#include "runtime/error.h"
#include "runtime/version.h"

int main(int argc, char** argv) {
  CLI::App app{"microbatch: train CNNs with batches far beyond device memory"};
  bool show_version = false;
  app.add_flag("--version", show_version, "print version, build flags and visible devices");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (show_version) {
      std::cout << mb::build_info();
      return 0;
    }
    std::cout << app.help();
    return 0;
  } catch (const mb::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
