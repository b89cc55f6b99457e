"""Repository-level conftest: the plugin itself comes from the ``pytest11`` entry point (pytest_glm.plugin),
so that ``pytest suites/`` behaves here exactly as it does for a user who installed the package.

Only repository layout is configured here: example files that pytester copies are not tests of their own.
"""

# pytester drives the plugin's own functional tests; declared here (the rootdir) because pytest only
# honours pytest_plugins in the root conftest, and its ini key (pytester_example_dir) must be known.
pytest_plugins = ["pytester"]

collect_ignore = ["tests/examples", "benchmarks"]
