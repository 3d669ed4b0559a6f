from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every app leans on: authentication, errors, throttling, parsers, middleware, logs.

    Imports run one way: wiring -> feature apps -> core; core imports no app of the project.
    """

    name = "snapasset.core"
    label = "core"
    verbose_name = "Core"
