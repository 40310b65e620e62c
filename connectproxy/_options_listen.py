# -*- test-case-name: tests.test_tap,tests.test_admin -*-
"""
The options that say where the proxy listens: C{--listen} (TCP, UNIX, TLS,
systemd and PROXY-protocol listeners), C{--trusted-proxy} (whose PROXY
headers are believed), C{--metrics} (the metrics and health listeners) and
C{--workers} (the processes that share the listeners), with the checks
between them.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from ._listeners import (
    ListenerError,
    ListenerPlan,
    SystemdSocketMissing,
    overlap,
    planListener,
)
from ._options_base import OptionGroup
from ._optionvalues import checkNetwork, workerCount
from ._sharedports import workersProblem

__all__ = ["DEFAULT_LISTEN", "ListenOptions", "fixedAddress"]

#: Where the proxy listens when no C{--listen} is given: loopback only.
DEFAULT_LISTEN = "tcp:3128:interface=127.0.0.1"


class ListenOptions(OptionGroup):
    """
    C{--listen}, C{--trusted-proxy}, C{--metrics} and C{--workers}.

    @ivar plans: Where each listener would listen, after parsing.
    @ivar metricsPlans: Where each metrics listener would listen, after
        parsing.
    """

    optParameters: list[list[Any]] = [
        [
            "workers",
            None,
            1,
            "Run this many worker processes (auto: one per usable CPU) sharing the "
            "listeners; the process started supervises them: it restarts a "
            "worker that dies and passes SIGHUP, SIGUSR1 and SIGTERM on. "
            "Connection limits, per-client limits, failed-login counts and "
            "resolver threads are per worker.",
            workerCount,
        ],
    ]

    optLists: list[list[Any]] = [
        ["listen", DEFAULT_LISTEN],
        ["trusted-proxy", "10.0.0.0/8"],
        ["metrics", "tcp:9108:interface=127.0.0.1"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.plans: list[ListenerPlan] = []
        self.metricsPlans: list[ListenerPlan] = []
        # systemd: listeners without their socket, refused after parsing
        # unless only checking the configuration (outside systemd).
        self._missingSockets: dict[str, SystemdSocketMissing] = {}
        self._missingMetricsSockets: dict[str, SystemdSocketMissing] = {}

    def opt_listen(self, description: str) -> None:
        """
        Listen on this strports description (repeatable), for example
        tcp:3128:interface=127.0.0.1, tcp6:3128:interface=\\:\\:1,
        unix:/run/connectproxy.sock, ssl:3129:privateKey=key.pem:certKey=cert.pem,
        systemd:domain=INET:index=0 or haproxy:tcp:3128.
        [default: tcp:3128:interface=127.0.0.1]
        """
        try:
            self.plans.append(planListener(description))
        except SystemdSocketMissing as e:
            self._missingSockets[description] = e
        except ListenerError as e:
            raise usage.UsageError(f"--listen {e}") from None
        self._append("listen", description)

    def opt_trusted_proxy(self, network: str) -> None:
        """
        Believe PROXY-protocol headers (haproxy: listeners) from load
        balancers in this network (CIDR, repeatable), besides loopback.
        Clients behind them must be in an --allow-client network.
        """
        try:
            checkNetwork(network)
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxy: {e}") from None
        self._append("trusted-proxy", network)

    def opt_metrics(self, description: str) -> None:
        """
        Serve Prometheus metrics (GET /metrics) and a health check (GET
        /healthz) over HTTP on this strports description (repeatable), for
        example tcp:9108:interface=127.0.0.1; never on a proxy port.
        """
        try:
            self.metricsPlans.append(planListener(description))
        except SystemdSocketMissing as e:
            self._missingMetricsSockets[description] = e
        except ListenerError as e:
            raise usage.UsageError(f"--metrics {e}") from None
        self._append("metrics", description)

    def _checkListeners(self) -> None:
        """
        Listen on L{DEFAULT_LISTEN} when no C{--listen} is given, and refuse
        listeners that could not all listen.
        """
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
            self.plans = [planListener(DEFAULT_LISTEN)]
        self._checkDuplicateListeners()
        self._checkMetrics()
        self._checkWorkers()

    def _checkWorkers(self) -> None:
        """
        Refuse C{--workers} with listeners the workers cannot share.
        """
        problem = workersProblem(self["workers"], self["listen"])
        if problem is not None:
            raise usage.UsageError(
                f"--workers {self['workers']}: {problem}"
                + self._fromFile("workers", "listen")
            )

    def _checkDuplicateListeners(self) -> None:
        """
        Refuse two listeners on the same address, or on overlapping ones
        (every address and one of them, on one port): the second could
        never listen.  Port 0 asks for a different free port each time.
        """
        seen: dict[str, str] = {}
        for index, plan in enumerate(self.plans):
            if plan.port == 0 or plan.fileno is not None:
                continue
            if plan.where in seen:
                raise usage.UsageError(
                    f"--listen {seen[plan.where]!r} and {plan.description!r} "
                    f"both listen on {plan.where}" + self._fromFile("listen")
                )
            seen[plan.where] = plan.description
            for other in self.plans[:index]:
                shared = overlap(other, plan)
                if shared is not None:
                    raise usage.UsageError(
                        f"--listen {other.description!r} and "
                        f"{plan.description!r} overlap: {shared}"
                        + self._fromFile("listen")
                    )

    def _checkMetrics(self) -> None:
        """
        Refuse a metrics listener on the address of a proxy listener or of
        another metrics listener, and C{--metrics} without
        C{prometheus_client}.
        """
        if not self["metrics"]:
            return
        seen = [
            (plan, f"--listen {plan.description!r}")
            for plan in self.plans
            if fixedAddress(plan)
        ]
        for plan in self.metricsPlans:
            if not fixedAddress(plan):
                continue
            for other, named in seen:
                # The same address, or one that takes it too (0.0.0.0 and
                # 127.0.0.1 on one port, say).
                if plan.where == other.where:
                    clash = f"both listen on {plan.where}"
                else:
                    shared = overlap(other, plan)
                    if shared is None:
                        continue
                    clash = f"overlap: {shared}"
                raise usage.UsageError(
                    f"--metrics {plan.description!r} and {named} {clash}: give "
                    "the metrics a port of their own" + self._fromFile("metrics")
                )
            seen.append((plan, f"--metrics {plan.description!r}"))
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise usage.UsageError(
                "--metrics needs the prometheus_client package: "
                "pip install prometheus_client"
            ) from None

    def _refuseMissingSockets(self) -> None:
        """
        Refuse the C{systemd:} listeners whose socket systemd did not pass.
        """
        for missing in self._missingSockets.values():
            raise usage.UsageError(f"--listen {missing}")
        for missing in self._missingMetricsSockets.values():
            raise usage.UsageError(f"--metrics {missing}")

    def _describeListeners(self) -> list[str]:
        """
        The C{--check-config} lines of the proxy listeners, then of the
        metrics listeners.
        """
        plans = {plan.description: plan for plan in self.plans}
        lines = []
        for description in self["listen"]:
            if description in plans:
                lines.append(plans[description].describe())
            else:
                lines.append(
                    f"listen {description} -> a socket from systemd (not "
                    f"checked here: {self._missingSockets[description].reason})"
                )
        if self["workers"] > 1:
            lines.append(f"workers {self['workers']} (sharing the listeners)")
        return lines + self._describeMetrics()

    def _describeMetrics(self) -> list[str]:
        """
        The C{--check-config} lines of the metrics listeners.
        """
        plans = {plan.description: plan for plan in self.metricsPlans}
        lines = []
        for description in self["metrics"]:
            plan = plans.get(description)
            if plan is None:
                missing = self._missingMetricsSockets[description]
                where = f"a socket from systemd (not checked here: {missing.reason})"
            else:
                scheme = "https" if plan.tls else "http"
                where = f"{plan.where} ({scheme}: /metrics, /healthz)"
            lines.append(f"metrics {description} -> {where}")
        return lines


def fixedAddress(plan: ListenerPlan) -> bool:
    """
    Whether a listener's address is known before it listens, and the same
    every time: a TCP port other than 0, a UNIX socket path, or a socket
    from systemd.
    """
    if plan.port is not None:
        return plan.port != 0
    return plan.path is not None or plan.fileno is not None
