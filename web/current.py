"""The engine (and its configuration) of the app handling the current request."""
from __future__ import annotations

from flask import current_app

from engine import Config, Engine


def engine() -> Engine:
    return current_app.extensions["engine"]


def config() -> Config:
    return engine().config
