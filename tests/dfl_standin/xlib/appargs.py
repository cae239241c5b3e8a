"""Application flags kept in the environment, so spawned workers see them."""

import os


def set_arg_bool(name, value):
    os.environ[name] = "1" if value else "0"


def get_arg_bool(name):
    return os.environ.get(name, "0") == "1"
