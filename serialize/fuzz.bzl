"""mproc_fuzzers: libFuzzer targets and the g++ replay test of their seed corpora."""

def mproc_fuzzers(fuzzers):
    """For each name -> deps: a manual cc_binary fuzz/<name>.cc (built with clang by
    tools/run_fuzzers.sh) and <name>_corpus_test, which replays fuzz/corpus/<name>/ under
    `bazel test //...`."""
    pkg = native.package_name()
    for name, deps in fuzzers.items():
        native.cc_binary(
            name = name,
            testonly = True,
            srcs = ["fuzz/" + name + ".cc"],
            tags = ["manual"],
            deps = deps,
        )
        native.cc_test(
            name = name + "_corpus_test",
            size = "small",
            srcs = [
                "fuzz/" + name + ".cc",
                "//serialize:fuzz/replay_test.cc",
            ],
            data = native.glob(["fuzz/corpus/" + name + "/*"]),
            env = {"FUZZ_CORPUS": pkg + "/fuzz/corpus/" + name},
            deps = deps + ["//base:test_main"],
        )
