#include <gtest/gtest.h>
TEST(Serve, Placeholder) {}
