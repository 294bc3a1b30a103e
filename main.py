"""Functions-framework entry point. Target: ``rebalance``.

    functions-framework --source main.py --target rebalance --port 8080

The state (configuration, Kubernetes and metrics clients, metrics registry) is built once per
instance, at import: an invalid configuration stops the instance before it serves anything.
"""

import functions_framework

from rebalancer.routes import build_state, respond

STATE = build_state()


@functions_framework.http
def rebalance(request):
    return respond(request, STATE)
