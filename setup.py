"""Package layout that pyproject.toml alone cannot say: the browser assets stay in the top-level
`static_js/` directory (where the JS tooling and docs expect them) and ship as the package
`gateway.static_js`, found at run time with importlib.resources in wheel and editable installs.
Everything else (metadata, dependencies, package data) is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["gateway", "gateway.*"]), "gateway.static_js"],
    package_dir={"gateway.static_js": "static_js"},
)
