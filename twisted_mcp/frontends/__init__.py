"""
Front-ends: how clients reach the gateway.  Newline-delimited JSON over
stdio and socket listeners (C{stream}), listener endpoint strings
(C{endpoints}), and the caps on client connections (C{admission}).
"""
