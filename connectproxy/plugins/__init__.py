"""
The namespace where third-party connectproxy plugins live.

Drop a module into a C{connectproxy/plugins/} directory anywhere on
C{sys.path} (without an C{__init__.py} of its own) and
L{twisted.plugin.getPlugins} finds it.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
