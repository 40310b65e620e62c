# -*- test-case-name: tests.test_forwardframing -*-
"""
The framing rules of plain HTTP forwarding, one by one: requests whose body
the next hop could read differently are answered 400 and never forwarded;
responses framed badly get 502.  Sans-I/O tests of L{connectproxy._messages}
and protocol tests through a whole proxy.
"""
