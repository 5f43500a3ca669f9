"""The operator console (SPEC.md, Operator console): the operator commands as web pages.

`server` builds the aiohttp application and serves it; `state` is what its handlers share;
`security` is its lock (loopback or a token, sessions, CSRF, read-only, headers, the audit
line); `snapshot` the bounded read of a parking queue that draws a queue's page; `jobs` the
plans and actions, run by the same code as the command line (`worker/ops`); `pages` and
`actions` the handlers; `templates/` and `static/` what the browser gets. No JavaScript:
every page is plain HTML forms.
"""
