"""Functions-framework entry point. Target: ``rebalance``.

    functions-framework --source main.py --target rebalance --port 8080

The state (configuration, Kubernetes and metrics clients, metrics registry) is built once per
instance, at import: an invalid configuration stops the instance before it serves anything.
"""

import gc

import flask
import functions_framework

from rebalancer.app import build
from rebalancer.config import load_settings
from rebalancer.routes import respond

STATE = build(load_settings())
# functions-framework loads this module in gunicorn's arbiter and then forks the worker.
# Freezing what exists now keeps the worker's garbage collector from writing to (and so
# copying) every page the two processes share: see gc.freeze() in the Python docs.
gc.freeze()


@functions_framework.http
def rebalance(request: flask.Request) -> flask.Response:
    return respond(request, STATE)
