"""The DAG tests and their test bed (a package, so that its conftest does not take the name
`conftest` from tests/system/conftest.py)."""
