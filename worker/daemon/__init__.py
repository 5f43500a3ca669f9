"""The service shell: builds everything, owns the task tree, serves health and metrics.

- `app.py`        the composition root: signals, the descriptor plan, the fleet, every queue
                  started in the task tree, shutdown with a grace period
- `assembly.py`   one queue's poller from its settings, and what the queues of a process share
- `discovery.py`  DLQs served by name prefix, picked up and released without a restart
- `health.py`     what `/livez` and `/readyz` judge; `http.py`: the endpoints on aiohttp

May import every wing below it (`dlq`, `fleet`, `targets`, `aws`, `core`); nothing imports it
but the command line and the demo.
"""
