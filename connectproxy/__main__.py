# -*- test-case-name: tests.test_command -*-
"""
C{python -m connectproxy}: the C{connectproxy} command.
"""

from connectproxy._command import main

if __name__ == "__main__":
    main()
