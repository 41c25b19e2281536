"""
Operations: the admin HTTP endpoint (/status, /metrics, reload, kill switch:
C{admin}), the log observers and their options (C{logs}), and systemd's
readiness notification (C{systemd}).
"""
