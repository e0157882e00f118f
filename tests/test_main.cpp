// The main of every test program: the default allocators (as a Session would install
// them), then GoogleTest.
#include <gtest/gtest.h>

#include "allocator/default_allocator.h"

int main(int argc, char** argv) {
  mb::install_default_allocators();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
