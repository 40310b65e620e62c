# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
The side-by-side benchmark of connectproxy, a direct connection and other
proxies on loopback: run C{python -m bench} from the repository root;
C{docs/performance.md} explains it.

Modules: L{bench.__main__} (command line), L{bench.run} (one run, the
interleaving), L{bench.measure} (the clients and the C{/proc} readers),
L{bench.memory} (idle tunnels, slow readers), L{bench.launch} (starting and
stopping processes, on the integration tests' harness), L{bench.others}
(squid, tinyproxy, proxy.py, pproxy, the naive relay), L{bench.report}
(the table and the JSON), L{bench.origin} (the origin servers' process) and
L{bench.naive} (the naive Twisted relay's process).
"""
