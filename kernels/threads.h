// The CPU backend's threads: one owner for them all. Our CPU kernels run their loops on
// cpu_threads() OpenMP threads; BLAS runs single-threaded inside those loops (OpenBLAS's own
// threads stay asleep instead of spinning between our ops). Every loop is split by index
// ranges fixed by the problem's size, never by the thread count, so results are the same
// bit for bit for 1 thread or 16 (tests/kernels/threads_test.cpp).
#pragma once

namespace mb {

// Cores this process may run on (sched_getaffinity); at least 1.
int available_cpu_cores();
// Threads the CPU kernels use; by default OMP_NUM_THREADS if set, else available_cpu_cores().
int cpu_threads();
// Sets it (1 <= threads <= 1024; InvalidArgument naming the flag otherwise). CLI --threads.
void set_cpu_threads(int threads);

}  // namespace mb
