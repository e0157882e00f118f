// The main of the tests that run as ranks (mpirun -np 2): the default allocators, MPI (through
// the launched communicator), then GoogleTest on every rank. A test that fails on one rank
// fails that rank's exit code, which mpirun reports.
#include <gtest/gtest.h>

#include "allocator/default_allocator.h"
#include "engine/communicator.h"

int main(int argc, char** argv) {
  mb::install_default_allocators();
  ::testing::InitGoogleTest(&argc, argv);
  mb::launched_communicator();
  return RUN_ALL_TESTS();
}
