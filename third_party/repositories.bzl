"""mproc_repositories(): every external repository mproc needs, declared offline.

The project's WORKSPACE calls this macro, and so does any consumer workspace right after
its `local_repository(name = "mproc", ...)`. Nothing is downloaded:

  * @rules_cc, @rules_java, @remote_coverage_tools: Bazel 4's built-in WORKSPACE suffix asks
    for these by download. Small repository rules write minimal forwarding versions instead
    (Debian's bazel-rules-cc is too new for Bazel 4.2.3).
  * @platforms: Debian's bazel-platforms package (/usr/share/bazel/platforms).
  * @mproc_system: one cc_library per Debian system library mproc links (liburing, the Abseil
    components, protobuf, gtest/gmock, Google Benchmark, OpenSSL libcrypto, Boost headers, spdlog).
    Binaries built with `-c opt` link Debian's static archives; other builds link the shared
    libraries. See third_party/system/system_libs.bzl.
  * @mproc_mpi: Open MPI when it is installed (HAVE_MPI in its defs.bzl); only //mpi uses it.
    See third_party/system/mpi.bzl.
"""

load("//third_party/bazel:offline_rules.bzl", "mproc_offline_rules_cc", "mproc_offline_rules_java", "mproc_offline_coverage_tools")
load("//third_party/system:mpi.bzl", "mproc_mpi")
load("//third_party/system:system_libs.bzl", "mproc_system_libraries")

def _maybe(rule, name, **kwargs):
    if name not in native.existing_rules():
        rule(name = name, **kwargs)

def mproc_repositories():
    _maybe(mproc_offline_rules_cc, "rules_cc")
    _maybe(mproc_offline_rules_java, "rules_java")
    _maybe(mproc_offline_coverage_tools, "remote_coverage_tools")
    _maybe(native.local_repository, "platforms", path = "/usr/share/bazel/platforms")
    _maybe(mproc_system_libraries, "mproc_system")
    _maybe(mproc_mpi, "mproc_mpi")
