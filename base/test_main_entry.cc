#include "base/test_main.h"

int main(int argc, char** argv) { return mproc::RunTestMain(argc, argv); }
