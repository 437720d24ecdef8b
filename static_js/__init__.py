"""The browser assets (loader.js, shim.js), installed as the package data of `gateway.static_js`.

This directory is mapped to that package by setup.py; the gateway reads the files with
importlib.resources (gateway/web/static.py), never by a path beside the source tree.
"""
