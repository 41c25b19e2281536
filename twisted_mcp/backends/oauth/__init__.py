"""
The gateway as an OAuth 2.1 client toward remote MCP servers (issue 13;
C{docs/design/oauth.md}): discovery, client identity, the authorization code
flow with PKCE, tokens kept sealed per principal, refresh, and the broker
that hands an HTTP backend the token of the principal a call runs as.
"""
