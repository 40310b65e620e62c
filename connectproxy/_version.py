"""
The version of connectproxy, kept apart so that packaging can read it without
importing Twisted.
"""

__version__ = "0.1.0"
