"""
The policy pipeline: every request that reaches a backend passes through
one governed point (identity, kill switch, access control, argument
checks, limits, breakers, audit).
"""
