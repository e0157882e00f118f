// The main of every Google Benchmark program: the default allocators (as a Session would
// install them), then the benchmarks.
#pragma once

#include <benchmark/benchmark.h>

#include "allocator/default_allocator.h"

#define MB_BENCHMARK_MAIN()                                             \
  int main(int argc, char** argv) {                                     \
    ::mb::install_default_allocators();                                 \
    ::benchmark::Initialize(&argc, argv);                               \
    if (::benchmark::ReportUnrecognizedArguments(argc, argv)) return 1; \
    ::benchmark::RunSpecifiedBenchmarks();                              \
    ::benchmark::Shutdown();                                            \
    return 0;                                                           \
  }
