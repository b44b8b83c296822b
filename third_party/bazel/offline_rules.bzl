"""Repository rules that write the minimal @rules_cc, @rules_java and @remote_coverage_tools
Bazel 4.2.3 needs, so nothing is fetched (BUILD-NOTES: Debian's bazel-rules-cc needs a newer
Bazel). They only forward to the native rules."""

_CC_DEFS = '''"""Forwarders to Bazel 4's native C++ rules (offline stand-in for rules_cc)."""
def cc_binary(**kwargs):
    native.cc_binary(**kwargs)
def cc_library(**kwargs):
    native.cc_library(**kwargs)
def cc_test(**kwargs):
    native.cc_test(**kwargs)
def cc_import(**kwargs):
    native.cc_import(**kwargs)
def cc_proto_library(**kwargs):
    native.cc_proto_library(**kwargs)
def cc_toolchain(**kwargs):
    native.cc_toolchain(**kwargs)
def cc_toolchain_suite(**kwargs):
    native.cc_toolchain_suite(**kwargs)
def objc_library(**kwargs):
    native.objc_library(**kwargs)
'''

def _rules_cc_impl(ctx):
    ctx.file("WORKSPACE", 'workspace(name = "rules_cc")\n')
    ctx.file("BUILD", "")
    ctx.file("cc/defs.bzl", _CC_DEFS)
    ctx.file("cc/BUILD", '''package(default_visibility = ["//visibility:public"])
alias(name = "toolchain_type", actual = "@bazel_tools//tools/cpp:toolchain_type")
exports_files(["defs.bzl"])
''')

mproc_offline_rules_cc = repository_rule(implementation = _rules_cc_impl)

_JAVA_DEFS = '''"""Forwarders to Bazel 4's native Java rules (offline stand-in for rules_java)."""
def java_binary(**kwargs):
    native.java_binary(**kwargs)
def java_import(**kwargs):
    native.java_import(**kwargs)
def java_library(**kwargs):
    native.java_library(**kwargs)
def java_runtime(**kwargs):
    native.java_runtime(**kwargs)
def java_toolchain(**kwargs):
    native.java_toolchain(**kwargs)
def java_test(**kwargs):
    native.java_test(**kwargs)
'''

def _rules_java_impl(ctx):
    ctx.file("WORKSPACE", 'workspace(name = "rules_java")\n')
    ctx.file("BUILD", "")
    ctx.file("java/defs.bzl", _JAVA_DEFS)
    ctx.file("java/BUILD", 'exports_files(["defs.bzl"])\n')

mproc_offline_rules_java = repository_rule(implementation = _rules_java_impl)

def _coverage_tools_impl(ctx):
    # Analysis needs these two targets; coverage reports come from gcov/lcov outside Bazel.
    ctx.file("WORKSPACE", 'workspace(name = "remote_coverage_tools")\n')
    ctx.file("noop.sh", "#!/bin/sh\nexit 0\n", executable = True)
    ctx.file("BUILD", '''package(default_visibility = ["//visibility:public"])
sh_binary(name = "coverage_report_generator", srcs = ["noop.sh"])
sh_binary(name = "lcov_merger", srcs = ["noop.sh"])
''')

mproc_offline_coverage_tools = repository_rule(implementation = _coverage_tools_impl)
