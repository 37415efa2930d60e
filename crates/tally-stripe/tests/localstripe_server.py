"""Runs localstripe (PyPI) on 127.0.0.1 only; its own launcher binds every interface.

    python3 localstripe_server.py 8420
"""
import sys

from aiohttp import web
from localstripe.server import app

web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8420, print=None)
