// The CPU thread owner: OpenMP for our loops, OpenBLAS pinned to one thread.
#include "kernels/threads.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>

#include <mutex>

#include "kernels/cpu/parallel.h"
#include "runtime/error.h"

namespace mb {
namespace {

// OpenBLAS is told once, before our first kernel, to run on the calling thread only: the
// parallelism is ours (each thread calls sgemm on its own block), and its pool of pthreads
// would otherwise spin in sched_yield after each call while our loops need the cores.
void configure_once() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

}  // namespace

int available_cpu_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  const int count = CPU_COUNT(&set);
  return count > 0 ? count : 1;
}

int cpu_threads() {
  configure_once();
  return omp_get_max_threads();
}

void set_cpu_threads(int threads) {
  MB_CHECK(threads >= 1 && threads <= 1024, "--threads ", threads,
           " is outside [1, 1024]. Fix: pass the number of cores to use, e.g. --threads ",
           available_cpu_cores());
  configure_once();
  omp_set_num_threads(threads);
}

namespace cpu {

void ensure_threads_configured() {
  configure_once();
}

}  // namespace cpu
}  // namespace mb
