"""Example hooks for retry-worker (docs/decisions.md): a package of your own, installed into
the daemon's image, named in the configuration as `acme_hooks.<module>:<function>`."""
