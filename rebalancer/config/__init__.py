"""The configuration: a YAML file named by ``REBALANCER_CONFIG``, overridden by ``REBALANCER_*``
env, validated whole at start; a bad value is one clear error naming the field.

``fields`` holds the vocabulary and the validated field types, ``targets`` a target and its
signals, ``settings`` the whole and its loading (the only reader of ``os.environ``).
"""

from rebalancer.config.fields import SIGNAL_NAMES, SignalName
from rebalancer.config.settings import Settings, describe_validation_error, environment_variables, load_settings
from rebalancer.config.targets import Target, WindowSpec

__all__ = ["SIGNAL_NAMES", "Settings", "SignalName", "Target", "WindowSpec", "describe_validation_error",
           "environment_variables", "load_settings"]
