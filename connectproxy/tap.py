# -*- test-case-name: tests.test_tap -*-
"""
The command line of C{twistd connectproxy} and C{twist connectproxy}:
L{Options} parses and checks the arguments (and the configuration file);
L{makeService} has L{buildConfig} build the running configuration from
them and returns the services that run it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, NoReturn

from twisted.application.service import IService, MultiService
from twisted.copyright import version as twistedVersion
from twisted.python import usage
from twisted.python.deprecate import deprecated

from ._acceptguard import REFUSAL, AcceptGuard, DescriptorReserve, ExhaustionReport
from ._admission import Gatekeeper
from ._assembly import (
    buildConfig,
    connectorMaker,
    gatekeeperFor,
    proxySettings,
    reloader,
)
from ._config import ConfigKey, applyConfig, loadConfig
from ._connector import ConnectorMaker
from ._deprecation import DEPRECATED_IN as _DEPRECATED_IN
from ._factory import ConnectProxyFactory
from ._limits import DescriptorLimitService, descriptorCeiling
from ._loglevel import LogLevelService
from ._observer import ObserverFanOut
from ._observercontext import ObserverContext
from ._options_access import AUTH_EXAMPLE, AccessOptions
from ._options_base import OptionGroup, gathered, lastOption
from ._options_limits import LimitOptions
from ._options_listen import DEFAULT_LISTEN as _DEFAULT_LISTEN
from ._options_listen import ListenOptions, fixedAddress
from ._options_observe import ObserverOptions, fileAccessLog
from ._options_upstream import UpstreamOptions
from ._outgoing import warnUnbindable
from ._service import proxyListeners, proxyService
from ._settings import ProxySettings
from ._supervisorservice import supervisorService
from ._version import __version__
from ._worker import ParentWatch
from ._worker import current as currentWorker
from .interfaces import IProxyObserver, IUpstreamConnector

__all__ = ["DEFAULT_LISTEN", "Options", "buildConfig", "makeService"]

#: Where the proxy listens when no C{--listen} is given: loopback only.
DEFAULT_LISTEN = _DEFAULT_LISTEN


#: What replaces the deprecated methods of L{Options} that built things.
_BUILT = "connectproxy.tap.buildConfig(options, reactor)"


class Options(
    ListenOptions, AccessOptions, UpstreamOptions, LimitOptions, ObserverOptions
):
    """
    Options for C{twistd connectproxy}: they parse and check the arguments
    and the configuration file, and touch no reactor.  L{buildConfig}
    builds the running configuration from them.

    Each concern's options are a group of their own, mixed in here:
    L{ListenOptions}, L{AccessOptions}, L{UpstreamOptions},
    L{LimitOptions} and L{ObserverOptions}.

    @ivar argv: The arguments parsed, kept so that a reload can parse them
        again (and re-read the configuration file).
    @ivar rules: The built-in access rules, parsed, after L{postOptions}.
    @ivar policies: The plugin policies, made from their arguments (which
        checks them), in order, after L{postOptions}.
    @ivar plans: Where each listener would listen, after parsing.
    @ivar metricsPlans: Where each metrics listener would listen, after
        parsing.
    """

    synopsis = "[options]"
    longdesc = (
        "An HTTP CONNECT forward proxy. Clients send 'CONNECT host:port'; the "
        "proxy connects to the target and relays bytes both ways. By default "
        "it listens on 127.0.0.1:3128, serves loopback clients only, tunnels "
        "to port 443 only (forwards http:// URLs to ports 80 and 443), and "
        "never to loopback, private or other "
        "non-global addresses. Options can also come from --config FILE "
        "(TOML, the same keys); the command line wins. SIGHUP re-reads the "
        "file, password files and rules without dropping tunnels."
    )

    optFlags: list[list[Any]] = [
        [
            "check-config",
            None,
            "Check the options, the configuration file, password files, "
            "policies, listeners and their certificates; print where the proxy "
            "would listen and exit (0: usable, 1: not), without listening.",
        ],
    ]

    #: Options that are not configuration, so not keys of the file.
    _notInFile = ("config", "check-config")

    optParameters: list[list[Any]] = [
        ["config", None, None, "Read options from this TOML file."],
    ]

    # Methods of the groups that callers use, here so that the API
    # reference lists them with Options.
    checkers = OptionGroup.checkers
    observers = ObserverOptions.observers

    def __init__(self) -> None:
        super().__init__()
        # Repeatable options, each a list of strings.
        self._lists = tuple(name for name, _ in gathered(type(self), "optLists"))
        for name in self._lists:
            self[name] = []
        self.argv: list[str] = []
        # Which options the command line gave (getopt has already expanded
        # abbreviations when the handlers run): the file does not override
        # those.
        self.given: set[str] = set()
        for name, handler in list(self._dispatch.items()):
            self._dispatch[name] = partial(self._dispatchGiven, handler)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse the options.  Under C{twistd} or C{twist} (when this is their
        subcommand's options) an error exits with the message alone, instead
        of the whole usage text that they print before it.

        @raise usage.UsageError: For a bad option, when not a subcommand.
        @raise SystemExit: For a bad option, when a subcommand.
        """
        self.argv = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(self.argv)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            from ._command import errorText

            raise SystemExit(errorText(e)) from None

    def _dispatchGiven(self, handler: Any, name: str, value: str) -> None:
        """
        Handle one option from the command line, noting that it was given,
        with error messages that name the option.
        """
        self.given.add(name)
        try:
            if isinstance(handler, usage.CoerceParameter):
                try:
                    self[name] = handler.coerce(value)
                except ValueError as e:
                    raise usage.UsageError(str(e)) from None
            else:
                handler(name, value)
        except usage.UsageError as e:
            message = str(e).removeprefix("Unexpected error: ")
            if not message.startswith(f"--{name}"):
                message = f"--{name}: {message}"
            raise usage.UsageError(message) from None

    def opt_version(self) -> NoReturn:
        """
        Print connectproxy's version (and Twisted's) and exit.
        """
        sys.stdout.write(f"connectproxy {__version__}\nTwisted {twistedVersion}\n")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self["config"] is not None:
            self._applyConfig(self["config"])
        self._checkListeners()
        self._checkAccessLog()
        self._checkLimits()
        self._checkAccess()
        self._checkUpstream()
        self._checkObservers()
        self._configureCheckers()
        if self["check-config"]:
            self.checkConfig()
        self._refuseMissingSockets()

    def checkConfig(self) -> NoReturn:
        """
        Print where each listener would listen, one line each, and exit with
        status 0 (C{--check-config}).  Errors have already stopped parsing
        (and exit with status 1 from the command line).

        @raise SystemExit: Always.
        """
        lines = self._describeListeners()
        lines.extend(self._describeOutgoing())
        lines.extend(self._describeResolver())
        lines.extend(self._describeAccessLog())
        source = f" ({self['config']})" if self["config"] is not None else ""
        lines.append(f"connectproxy {__version__}: configuration OK{source}")
        sys.stdout.write("\n".join(lines) + "\n")
        raise SystemExit(0)

    def parseArgs(self, *args: str) -> None:
        """
        The proxy takes options only.

        @raise usage.UsageError: For any argument that is not an option,
            naming it, and the option before it when it looks like a second
            value for that option.
        """
        if not args:
            return
        unexpected = args[0]
        before = self.argv[: len(self.argv) - len(args)]
        option, value = lastOption(before, self.longOpt)
        if option is None:
            raise usage.UsageError(
                f"unexpected argument {unexpected!r}: the proxy takes options only"
            )
        if value is None:
            raise usage.UsageError(
                f"unexpected argument {unexpected!r} after --{option}, which "
                "takes no value"
            )
        raise usage.UsageError(
            f"unexpected argument {unexpected!r} after --{option} {value}: an "
            "option takes one value; repeat the option for each (--"
            f"{option} {value} --{option} {unexpected})"
        )

    def configKeys(self) -> dict[str, ConfigKey]:
        """
        The keys a configuration file may have: the long names of the
        options, except C{config} and C{check-config}, with their kinds.  A
        parameter takes a TOML number (or a string) unless it has no coerce
        function or one marked C{string = True}; then only a string.
        """
        keys: dict[str, ConfigKey] = {}
        for name, _, default, _, *coerce in gathered(type(self), "optParameters"):
            if name not in self._notInFile:
                convert = coerce[0] if coerce else str
                if convert is str or getattr(convert, "string", False):
                    example = f'{name} = "{default}"'
                    keys[name] = ConfigKey("string", convert, example=example)
                else:
                    keys[name] = ConfigKey("number", convert, example=f"{name} = 30")
        examples = dict(gathered(type(self), "optLists"))
        examples["auth"] = AUTH_EXAMPLE
        for name in (*self._lists, "auth"):
            keys[name] = ConfigKey(
                "list",
                getattr(self, "opt_" + name.replace("-", "_")),
                integers=name == "allow-port",
                example=f'{name} = ["{examples[name]}"]',
            )
        for name, *_ in gathered(type(self), "optFlags"):
            if name not in self._notInFile:
                keys[name] = ConfigKey("flag", example=f"{name} = true")
        return keys

    def _applyConfig(self, path: str) -> None:
        applyConfig(
            path, loadConfig(path), self.given, self.configKeys(), self.__setitem__
        )

    @deprecated(_DEPRECATED_IN, _BUILT + ".upstream")
    def upstream(self) -> ConnectorMaker:
        """
        @return: What makes the connector C{--upstream} names.
        """
        return connectorMaker(self)

    @deprecated(_DEPRECATED_IN, _BUILT + ".settings")
    def settings(self) -> ProxySettings:
        """
        @return: The L{ProxySettings} these options describe.
        """
        return proxySettings(self)

    @deprecated(_DEPRECATED_IN, _BUILT + ".gatekeeper")
    def gatekeeper(self, reactor: Any) -> Gatekeeper:
        """
        @return: The access checks these options describe, on C{reactor}.
        """
        return gatekeeperFor(self, reactor)

    @deprecated(_DEPRECATED_IN, _BUILT + ".unauthenticated")
    def unauthenticated(self) -> bool:
        """
        @return: Whether clients tunnel without authenticating (no C{--auth}).
        """
        return not self.checkers()


#: Kept for callers of the name it had here.
_fixedAddress = fixedAddress


# usage.Options shows handler docstrings as they are, indentation included:
# make each one a single paragraph for --help.
for _name in dir(Options):
    _method = getattr(Options, _name)
    if _name.startswith("opt_") and _method.__doc__:
        _method.__doc__ = " ".join(_method.__doc__.split())


def makeService(
    options: Options,
    reactor: Any = None,
    *,
    connector: IUpstreamConnector | None = None,
    observers: Iterable[IProxyObserver] | None = None,
) -> MultiService:
    """
    Build the proxy service: one listener per C{--listen}, sharing one
    factory, and the reload service (SIGHUP, with the global reactor).

    @param options: Parsed L{Options}.
    @param reactor: The reactor to use; the global one when C{None}.
    @param connector: A connector to use in place of the one C{--upstream}
        names, at start and after every reload.
    @param observers: Observers to tell of refusals and tunnels in place of
        the access log, at start and after every reload (the metrics of
        C{--metrics} are told too).
    @return: A L{MultiService} holding the listeners; its child named
        C{"reload"} has a C{reload()} method, the one named C{"descriptors"}
        raises the descriptor limit at start (only when C{reactor} is
        C{None}: in the proxy's own process), the one named C{"observers"}
        holds the services the C{--observer} plugins added (the
        C{--metrics} listeners, and, with
        C{--access-log}, the one named C{"accesslog"} whose C{writer}
        counts the lines it dropped, C{writer.droppedLines}), the one
        named C{"shutdown"} drains when the service stops, the one named
        C{"loglevel"} applies C{--log-level} (only in the proxy's own
        process), and the one named C{"notify"} tells systemd
        (C{$NOTIFY_SOCKET}) when the proxy is ready, reloading and
        stopping.  Stopping it drains first: see
        L{connectproxy._shutdown.ProxyService}.
    @raise usage.UsageError: When the C{--upstream} or an C{--observer}
        plugin refuses its argument.
    """
    installSignal = reactor is None
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    worker = currentWorker()
    if worker is None and options["workers"] > 1:
        if connector is not None or observers is not None:
            raise usage.UsageError(
                "--workers: each worker runs the command line; a connector or "
                "observers given to makeService cannot be passed to them"
            )
        return supervisorService(options, reactor, installSignal)
    if observers is not None:
        observers = tuple(observers)
    config = buildConfig(options, reactor, connector=connector, observers=observers)
    if worker is not None:
        config = worker.configure(config)
    try:
        factory = ConnectProxyFactory.fromConfig(reactor, config)
    except ValueError as e:
        # The connector plugin refused its argument after all.
        raise usage.UsageError(str(e)) from None
    warnUnbindable(factory.settings.outgoingAddresses)
    # What the observers need running starts before the listeners and
    # stops after them.
    observerServices = MultiService()
    observerServices.setName("observers")
    context = ObserverContext(reactor, factory, observerServices)
    accessLog = None
    if observers is None:
        # Made once, at start, by the --observer plugins; a reload keeps
        # them.
        accessLog = fileAccessLog(options, reactor, observerServices, installSignal)
        context = ObserverContext(reactor, factory, observerServices, accessLog)
        try:
            observers = tuple(options.observers(context))
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        factory.observer = ObserverFanOut(observers)
    metrics = None
    if options["metrics"]:
        # Imported here: prometheus_client only with --metrics.
        from ._admin import addMetrics

        if worker is None:
            metrics = addMetrics(options["metrics"], context)
        else:
            private = worker.metricsListen(options["metrics"])
            metrics = addMetrics(private, context, False)
        if accessLog is not None:
            metrics.observer.accessLogDropped = lambda: accessLog.droppedLines
        factory.observer.observers.append(metrics.observer)
        observers = (*observers, metrics.observer)
    load = reloader(options, reactor, connector=connector, observers=observers)
    # Descriptors: raised at start in the proxy's own process (never in a
    # caller's that passes its reactor), before the listeners listen.
    reserve = DescriptorReserve()
    report = ExhaustionReport(reactor)
    limits = DescriptorLimitService(
        factory,
        reserve,
        report,
        raiseLimit=installSignal,
        automaticMaxConnections=options["max-connections"] is None,
        ceiling=descriptorCeiling(reactor),
    )
    limits.setName("descriptors")
    plans = {plan.description: plan for plan in config.plans}

    def acceptGuard(description: str) -> AcceptGuard:
        plan = plans.get(description)
        tls = plan is not None and plan.tls
        return AcceptGuard(reactor, reserve, report, None if tls else REFUSAL)

    before: list[IService] = [limits, observerServices]
    if installSignal:
        # The process's log: filtered from the start to the very end.
        levels = LogLevelService(options["log-level"], reactor)
        levels.setName("loglevel")
        before.insert(0, levels)
    service = proxyService(
        reactor,
        factory,
        config,
        load,
        installSignal,
        before=before,
        acceptGuard=acceptGuard,
        adopted=() if worker is None else worker.adopted,
        notifier=None if worker is None else worker.notifier(),
    )
    if worker is not None:
        ParentWatch(reactor, worker.worker, worker.parent).setServiceParent(service)
    if metrics is not None:
        metrics.health.listeners = proxyListeners(service)
    return service
